package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/graftdev/graft/tasks/api"
)

func newFlagsCmd(cli *cliOpts) *cobra.Command {
	cmd := &cobra.Command{Use: "flags", Short: "read and change the intake's routing flags through the server"}
	cmd.AddCommand(newFlagsGetCmd(cli), newFlagsSetCmd(cli), newFlagsAuditCmd(cli))
	return cmd
}

func rulesText(rules []api.KeyRule) string {
	var parts []string
	for _, r := range rules {
		parts = append(parts, fmt.Sprintf("%s=%g%%", strings.Join(r.Keys, ","), r.Percent))
	}
	return strings.Join(parts, " ")
}

func newFlagsGetCmd(cli *cliOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "get",
		Short: "show every flag and the global kill switch",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return show(cmd, cli, 200, func(ctx context.Context, c *api.ClientWithResponses) (*api.GetFlagsResponse, error) {
				return c.GetFlagsWithResponse(ctx)
			}, func(w io.Writer, res *api.GetFlagsResponse) {
				set := res.JSON200
				fmt.Fprintf(w, "flag set version %d, global kill switch: %v\n\n", set.Version, set.Killed)
				fmt.Fprintln(w, "KIND\tVERSION\tKILLED\tDEFAULT\tKEY RULES")
				for _, f := range set.Flags {
					fmt.Fprintf(w, "%s\t%d\t%v\t%g%%\t%s\n", f.Kind, f.Version, f.Killed, f.DefaultPercent, rulesText(f.KeyRules))
				}
			})
		},
	}
}

func newFlagsSetCmd(cli *cliOpts) *cobra.Command {
	var version int64
	var killed bool
	var pct float64
	var rules []string
	var reason string
	cmd := &cobra.Command{
		Use:   "set KIND --version N --reason TEXT [--killed] [--default-percent P] [--key-rule KEYS=P]...",
		Short: `change a kind's flag against the version you read (KIND "*": the global kill switch)`,
		Args:  withUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return show(cmd, cli, 200, func(ctx context.Context, c *api.ClientWithResponses) (*api.SetFlagResponse, error) {
				ch := api.FlagChange{Version: version, Reason: reason, Killed: &killed}
				if args[0] != "*" {
					kr := []api.KeyRule{}
					for _, r := range rules {
						keys, p, ok := strings.Cut(r, "=")
						f, perr := strconv.ParseFloat(strings.TrimSuffix(p, "%"), 64)
						if !ok || perr != nil || keys == "" {
							return nil, fmt.Errorf("--key-rule %q: use KEY[,KEY...]=PERCENT, e.g. com,net=100", r)
						}
						kr = append(kr, api.KeyRule{Keys: strings.Split(keys, ","), Percent: f})
					}
					ch.DefaultPercent, ch.KeyRules = &pct, &kr
					// The API replaces the whole flag; what the command was
					// not given keeps the flag's value, as the UI's kill
					// switch does, so that --killed alone does not also wipe
					// the rules and the default.
					fl := cmd.Flags()
					if !fl.Changed("killed") || !fl.Changed("default-percent") || !fl.Changed("key-rule") {
						if err := keepUnchanged(ctx, c, args[0], &ch, fl.Changed("killed"), fl.Changed("default-percent"), fl.Changed("key-rule")); err != nil {
							return nil, err
						}
					}
				}
				return c.SetFlagWithResponse(ctx, args[0], ch)
			}, func(w io.Writer, res *api.SetFlagResponse) {
				f := res.JSON200
				if f.Kind == "*" { // the global kill switch has no percentages
					fmt.Fprintf(w, "the global kill switch is at version %d: killed=%v\n", f.Version, f.Killed)
					return
				}
				fmt.Fprintf(w, "%s is at version %d: killed=%v default=%g%% %s\n", f.Kind, f.Version, f.Killed, f.DefaultPercent, rulesText(f.KeyRules))
			})
		},
	}
	fl := cmd.Flags()
	fl.Int64Var(&version, "version", 0, "the version the change is made against (0 creates the flag)")
	fl.BoolVar(&killed, "killed", false, "the kill switch (left out: as it is)")
	fl.Float64Var(&pct, "default-percent", 0, "percent of other keys routed to graft (left out: as it is)")
	fl.StringArrayVar(&rules, "key-rule", nil, "KEYS=PERCENT, repeatable (the whole rule list is replaced; left out: as it is)")
	fl.StringVar(&reason, "reason", "", "why (audited; required)")
	_ = cmd.MarkFlagRequired("reason")
	return cmd
}

// keepUnchanged fills the fields of ch the command was not given from the
// kind's flag as the server has it. A flag at another version than ch's is
// left alone: the server refuses the change as stale anyway.
func keepUnchanged(ctx context.Context, c *api.ClientWithResponses, kind string, ch *api.FlagChange, killed, pct, rules bool) error {
	res, err := call(ctx, c, 200, func(ctx context.Context, c *api.ClientWithResponses) (*api.GetFlagsResponse, error) {
		return c.GetFlagsWithResponse(ctx)
	})
	if err != nil {
		return err
	}
	for _, f := range res.JSON200.Flags {
		if f.Kind != kind || f.Version != ch.Version {
			continue
		}
		if !killed {
			ch.Killed = &f.Killed
		}
		if !pct {
			ch.DefaultPercent = &f.DefaultPercent
		}
		if !rules {
			ch.KeyRules = &f.KeyRules
		}
	}
	return nil
}

func newFlagsAuditCmd(cli *cliOpts) *cobra.Command {
	var kind string
	var limit int
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "show changes to the flags, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return show(cmd, cli, 200, func(ctx context.Context, c *api.ClientWithResponses) (*api.GetFlagAuditResponse, error) {
				return c.GetFlagAuditWithResponse(ctx, &api.GetFlagAuditParams{Kind: opt(kind), Limit: &limit})
			}, func(w io.Writer, res *api.GetFlagAuditResponse) {
				fmt.Fprintln(w, "TIME\tKIND\tVERSION\tBY\tREASON\tNEW VALUE")
				for _, a := range res.JSON200.Items {
					nv := ""
					if a.New != nil {
						nv = string(*a.New)
					}
					fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\n", ts(&a.At), a.Kind, a.Version, a.Actor, a.Reason, nv)
				}
			})
		},
	}
	cmd.Flags().StringVar(&kind, "kind", "", `one kind ("*": the global kill switch)`)
	cmd.Flags().IntVar(&limit, "limit", 100, "at most this many")
	return cmd
}
