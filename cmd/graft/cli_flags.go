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
				// A rule stored before the server refused keys that can never
				// match is kept; say so under the table.
				blank := "\n"
				for _, f := range set.Flags {
					if f.Warning != nil {
						fmt.Fprintf(w, "%swarning: %s: %s\n", blank, f.Kind, *f.Warning)
						blank = ""
					}
				}
			})
		},
	}
}

func newFlagsSetCmd(cli *cliOpts) *cobra.Command {
	var version int64
	var killed, dry bool
	var pct float64
	var rules []string
	var reason string
	cmd := &cobra.Command{
		Use:   "set KIND --version N --reason TEXT [--killed] [--default-percent P] [--key-rule KEYS=P]... [--dry-run]",
		Short: `change a kind's flag against the version you read (KIND "*": the global kill switch)`,
		Args:  withUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if fl := cmd.Flags(); !fl.Changed("killed") && !fl.Changed("default-percent") && !fl.Changed("key-rule") {
				// The server would record a new version that changes nothing.
				return fmt.Errorf("nothing to change: give --killed, --default-percent or --key-rule")
			}
			// change is the change the command was given; for a kind, what it
			// was not given keeps the flag's value, as the UI's kill switch
			// does, so that --killed alone does not also wipe the rules and
			// the default (the API replaces the whole flag).
			change := func(ctx context.Context, c *api.ClientWithResponses) (api.FlagChange, error) {
				ch := api.FlagChange{Version: version, Reason: reason, Killed: &killed}
				if args[0] == "*" {
					return ch, nil
				}
				kr := []api.KeyRule{}
				for _, r := range rules {
					keys, p, ok := strings.Cut(r, "=")
					f, perr := strconv.ParseFloat(strings.TrimSuffix(p, "%"), 64)
					if !ok || perr != nil || keys == "" {
						return ch, fmt.Errorf("--key-rule %q: use KEY[,KEY...]=PERCENT, e.g. com,net=100", r)
					}
					kr = append(kr, api.KeyRule{Keys: strings.Split(keys, ","), Percent: f})
				}
				ch.DefaultPercent, ch.KeyRules = &pct, &kr
				fl := cmd.Flags()
				if dry || !fl.Changed("killed") || !fl.Changed("default-percent") || !fl.Changed("key-rule") {
					return ch, keepUnchanged(ctx, c, args[0], &ch, fl.Changed("killed"), fl.Changed("default-percent"), fl.Changed("key-rule"), dry)
				}
				return ch, nil
			}
			if dry {
				if args[0] == "*" {
					return fmt.Errorf("--dry-run: the global kill switch has no preview (killed, it routes every pending row to legacy)")
				}
				return show(cmd, cli, 200, func(ctx context.Context, c *api.ClientWithResponses) (*api.PreviewFlagResponse, error) {
					ch, err := change(ctx, c)
					if err != nil {
						return nil, err
					}
					return c.PreviewFlagWithResponse(ctx, args[0], api.FlagPreviewRequest{Killed: ch.Killed, DefaultPercent: ch.DefaultPercent, KeyRules: ch.KeyRules})
				}, func(w io.Writer, res *api.PreviewFlagResponse) { flagPreviewTable(w, res.JSON200) })
			}
			return show(cmd, cli, 200, func(ctx context.Context, c *api.ClientWithResponses) (*api.SetFlagResponse, error) {
				ch, err := change(ctx, c)
				if err != nil {
					return nil, err
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
	fl.BoolVar(&dry, "dry-run", false, "show where the kind's pending rows would go, now and after the change; change nothing")
	_ = cmd.MarkFlagRequired("reason")
	return cmd
}

// flagPreviewTable writes a flag change's preview: the pending rows' routes
// before and after, and per key.
func flagPreviewTable(w io.Writer, p *api.FlagPreview) {
	fmt.Fprintf(w, "dry run: of %s's %d pending rows, graft would take %d (now %d) and legacy %d (now %d): %d move to graft, %d to legacy\n",
		p.Kind, p.Scanned, p.After.Graft, p.Before.Graft, p.After.Legacy, p.Before.Legacy, p.ToGraft, p.ToLegacy)
	if p.Note != nil {
		fmt.Fprintln(w, *p.Note)
	}
	if len(p.ByKey) > 0 {
		fmt.Fprintln(w, "\nKEY\tROWS\tGRAFT NOW\tGRAFT AFTER")
		for _, k := range p.ByKey {
			fmt.Fprintf(w, "%s\t%d\t%d\t%d\n", k.Key, k.Rows, k.BeforeGraft, k.AfterGraft)
		}
	}
}

// keepUnchanged fills the fields of ch the command was not given from the
// kind's flag as the server has it. A flag at another version than ch's is
// left alone: the server refuses the change as stale anyway; a dry run,
// which the server does not check against a version, refuses it here.
func keepUnchanged(ctx context.Context, c *api.ClientWithResponses, kind string, ch *api.FlagChange, killed, pct, rules, dry bool) error {
	res, err := call(ctx, c, 200, func(ctx context.Context, c *api.ClientWithResponses) (*api.GetFlagsResponse, error) {
		return c.GetFlagsWithResponse(ctx)
	})
	if err != nil {
		return err
	}
	var current int64
	for _, f := range res.JSON200.Flags {
		if f.Kind != kind {
			continue
		}
		current = f.Version
		if f.Version != ch.Version {
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
	if dry && current != ch.Version {
		return fmt.Errorf("--version: %s is at version %d, the change was made against version %d", kind, current, ch.Version)
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
