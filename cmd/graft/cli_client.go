package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"reflect"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/graftdev/graft/tasks/api"
)

// cliOpts are the flags every client command shares.
type cliOpts struct {
	server string
	token  string
	output string
	out    io.Writer // the command's output; default os.Stdout
}

func (c *cliOpts) stdout() io.Writer {
	if c.out != nil {
		return c.out
	}
	return os.Stdout
}

// client returns the generated API client for --server, sending --token.
func (c *cliOpts) client() (*api.ClientWithResponses, error) {
	if c.output != "table" && c.output != "json" {
		return nil, fmt.Errorf("--output %q: use table or json", c.output)
	}
	if c.token == "" {
		return nil, fmt.Errorf("no token: set GRAFT_TOKEN or --token (create one with graft tokens create --direct)")
	}
	tok := c.token
	return api.NewClientWithResponses(c.server, api.WithHTTPClient(&http.Client{Timeout: time.Minute}),
		api.WithRequestEditorFn(func(_ context.Context, r *http.Request) error {
			r.Header.Set("Authorization", "Bearer "+tok)
			return nil
		}))
}

// response is a generated client response (api.XxxResponse): its status,
// its raw Body (read by bodyOf) and the typed value of each answer
// (JSON200, JSON201 ...).
type response interface{ StatusCode() int }

// bodyOf returns a generated response's raw body. Every generated response
// has a Body field of bytes (TestGeneratedResponsesHaveABody), but no
// method to read it, hence reflection.
func bodyOf(res response) []byte {
	return reflect.ValueOf(res).Elem().FieldByName("Body").Bytes()
}

// call makes one request with the generated client c and returns its
// response when the server answered want; any other answer is an error
// saying what the server's problem document says.
func call[R response](ctx context.Context, c *api.ClientWithResponses, want int, send func(context.Context, *api.ClientWithResponses) (R, error)) (R, error) {
	res, err := send(ctx, c)
	if err != nil {
		return res, err
	}
	if err := check(res.StatusCode(), bodyOf(res), want); err != nil {
		var zero R
		return zero, err
	}
	return res, nil
}

// show is a command's whole life when it makes one request and prints the
// answer: the client for --server, the call, and its JSON body with
// -o json, else what table writes of the response.
func show[R response](cmd *cobra.Command, cli *cliOpts, want int, send func(context.Context, *api.ClientWithResponses) (R, error), table func(io.Writer, R)) error {
	c, err := cli.client()
	if err != nil {
		return err
	}
	res, err := call(cmd.Context(), c, want, send)
	if err != nil {
		return err
	}
	return cli.emit(bodyOf(res), func(w io.Writer) { table(w, res) })
}

// check turns a response other than want into an error that says what the
// server's problem document says (a *problemErr when there is one).
func check(status int, body []byte, want int) error {
	if status == want {
		return nil
	}
	var p api.Problem
	if json.Unmarshal(body, &p) == nil && p.Title != "" {
		return &problemErr{p: p, field: str(p.Field)}
	}
	return fmt.Errorf("server answered %d: %s", status, strings.TrimSpace(string(body)))
}

// problemErr is the server's problem document as a command's error. field
// is the field the problem names: the API's name of it (from_step) until
// namedAsFlags renames it to what the command calls it (--from-step).
type problemErr struct {
	p     api.Problem
	field string
}

func (e *problemErr) Error() string {
	msg := fmt.Sprintf("%d %s", e.p.Status, e.p.Title)
	if e.field != "" {
		msg += ": " + e.field
	}
	if e.p.Detail != nil {
		msg += ": " + *e.p.Detail
	}
	return msg
}

// apiFieldAliases are the API fields whose CLI name is not their own with
// "-" for "_" (and a bulk filter's fields without "filter.").
var apiFieldAliases = map[string]string{
	"filter.ids": "id", "expires_in_hours": "expires-in", "key_rules": "key-rule",
	"payload": "payload-json", "signal.payload": "payload-json", "signal.name": "name",
}

// cliName is what command cmd calls the API's field: its flag (--from-step
// for from_step), else its argument in the usage line (NAME, KIND,
// PAYLOAD-JSON), else the API's own name.
func cliName(cmd *cobra.Command, field string) string {
	name, ok := apiFieldAliases[field]
	if !ok {
		name = strings.ReplaceAll(strings.TrimPrefix(field, "filter."), "_", "-")
	}
	if name == "" {
		return field
	}
	if cmd.Flags().Lookup(name) != nil {
		return "--" + name
	}
	arg := strings.ToUpper(name)
	for _, w := range strings.Fields(cmd.Use) {
		if strings.Trim(w, "[].") == arg {
			return arg
		}
	}
	return field
}

// namedAsFlags makes every command under root name the field of a problem
// the server answers with as the command does (cliName): one place for
// every command, instead of each translating its own.
func namedAsFlags(root *cobra.Command) {
	for _, c := range root.Commands() {
		namedAsFlags(c)
	}
	run := root.RunE
	if run == nil {
		return
	}
	root.RunE = func(cmd *cobra.Command, args []string) error {
		err := run(cmd, args)
		if pe := (*problemErr)(nil); errors.As(err, &pe) && pe.field != "" {
			pe.field = cliName(cmd, pe.field)
		}
		return err
	}
}

// emit prints a response: its JSON body with -o json, else what table
// writes.
func (c *cliOpts) emit(body []byte, table func(w io.Writer)) error {
	if c.output == "json" {
		var buf bytes.Buffer
		if err := json.Indent(&buf, body, "", "  "); err != nil {
			_, err = c.stdout().Write(body)
			return err
		}
		buf.WriteByte('\n')
		_, err := buf.WriteTo(c.stdout())
		return err
	}
	tw := tabwriter.NewWriter(c.stdout(), 0, 4, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func ts(t *time.Time) string {
	if t == nil || t.IsZero() {
		return ""
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func errText(e *api.ErrorInfo) string {
	if e == nil {
		return ""
	}
	s := e.Message
	if e.Type != nil {
		s = *e.Type + ": " + s
	}
	if e.Step != nil {
		s = "[" + *e.Step + "] " + s
	}
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return s
}

// count is n with the noun in the number n takes: "1 run", "2 runs".
func count(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// withUsage makes an argument-count error say the command's usage line,
// which cobra's "accepts 1 arg(s), received 0" leaves out (the CLI prints
// no usage on errors).
func withUsage(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return fmt.Errorf("%w; usage: %s", err, cmd.UseLine())
		}
		return nil
	}
}
