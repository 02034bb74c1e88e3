package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/graftdev/graft/tasks/api"
)

func newOpsCmd(cli *cliOpts) *cobra.Command {
	cmd := &cobra.Command{Use: "ops", Short: "list, inspect and act on operations through the server"}
	cmd.AddCommand(newOpsListCmd(cli), newOpsShowCmd(cli), newOpsHistoryCmd(cli), newOpsCancelCmd(cli),
		newOpsRelaunchCmd(cli), newOpsSignalCmd(cli))
	return cmd
}

// filterFlags are the list filters, shared with the bulk commands.
type filterFlags struct {
	status                                             []string
	kind, key, customer, route, failingStep, errorType string
	since                                              time.Duration
	after, before                                      string
}

func (f *filterFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringSliceVar(&f.status, "status", nil, "statuses (pending, running, waiting, completed, failed, cancelled, waiting_signal, needs_operator, retrying, throttled)")
	fl.StringVar(&f.kind, "kind", "", "the operation's kind (workflow type)")
	fl.StringVar(&f.key, "key", "", "the routing key")
	fl.StringVar(&f.customer, "customer", "", "the customer")
	fl.StringVar(&f.route, "route", "", "graft, the only route listed (legacy-routed operations are rows of the legacy table)")
	fl.StringVar(&f.failingStep, "failing-step", "", "the name of the latest failed step")
	fl.StringVar(&f.errorType, "error-type", "", "the type of the latest error")
	fl.DurationVar(&f.since, "since", 0, "created or last relaunched within this long (e.g. 1h)")
	fl.StringVar(&f.after, "created-after", "", "created or last relaunched at or after (RFC 3339)")
	fl.StringVar(&f.before, "created-before", "", "created or last relaunched before (RFC 3339)")
}

func opt(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func (f *filterFlags) params() (api.ListOperationsParams, error) {
	p := api.ListOperationsParams{Kind: opt(f.kind), Key: opt(f.key), Customer: opt(f.customer),
		FailingStep: opt(f.failingStep), ErrorType: opt(f.errorType)}
	if len(f.status) > 0 {
		st := make([]api.StatusFilter, len(f.status))
		for i, s := range f.status {
			st[i] = api.StatusFilter(s)
		}
		p.Status = &st
	}
	if f.route != "" {
		r := api.ListOperationsParamsRoute(f.route)
		p.Route = &r
	}
	for _, tf := range []struct {
		flag, v string
		dst     **time.Time
	}{{"--created-after", f.after, &p.CreatedAfter}, {"--created-before", f.before, &p.CreatedBefore}} {
		if tf.v == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339, tf.v)
		if err != nil {
			return p, fmt.Errorf("%s %q: use RFC 3339 (2026-01-02T15:04:05Z)", tf.flag, tf.v)
		}
		*tf.dst = &t
	}
	if f.since > 0 {
		t := time.Now().Add(-f.since)
		p.CreatedAfter = &t
	}
	return p, nil
}

func newOpsListCmd(cli *cliOpts) *cobra.Command {
	f := &filterFlags{}
	var limit int
	var cursor string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "list operations, newest first, with counts per status",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return show(cmd, cli, 200, func(ctx context.Context, c *api.ClientWithResponses) (*api.ListOperationsResponse, error) {
				p, err := f.params()
				if err != nil {
					return nil, err
				}
				p.Limit, p.Cursor = &limit, opt(cursor)
				return c.ListOperationsWithResponse(ctx, &p)
			}, func(w io.Writer, res *api.ListOperationsResponse) {
				page := res.JSON200
				fmt.Fprintln(w, "ID\tKIND\tSTATUS\tCUSTOMER\tKEY\tCREATED\tRELAUNCHED\tLAST ERROR")
				for _, o := range page.Items {
					status := string(o.Status)
					if o.Conditions != nil {
						status += " (" + strings.Join(*o.Conditions, ",") + ")"
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", o.Id, o.Kind, status, str(o.Customer), str(o.Key),
						ts(&o.CreatedAt), ts(o.RelaunchedAt), errText(o.LastError))
				}
				keys := make([]string, 0, len(page.Counts))
				for k := range page.Counts {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				var counts []string
				for _, k := range keys {
					c := fmt.Sprintf("%s=%d", k, page.Counts[k])
					if page.CountsAtLeast != nil && slices.Contains(*page.CountsAtLeast, k) {
						c += "+" // the server's count stopped at its cap
					}
					counts = append(counts, c)
				}
				// The counts leave the status filter out (they say how the
				// rest splits), so with --status they are not what matched.
				label := "matching"
				if len(f.status) > 0 {
					label = "matching the other filters, per status"
				}
				if len(counts) == 0 {
					counts = append(counts, "none")
				}
				fmt.Fprintf(w, "\n%s: %s\n", label, strings.Join(counts, " "))
				if page.NextCursor != nil {
					fmt.Fprintf(w, "more: --cursor %s\n", *page.NextCursor)
				}
			})
		},
	}
	f.add(cmd)
	cmd.Flags().IntVar(&limit, "limit", 50, "page size (at most 500)")
	cmd.Flags().StringVar(&cursor, "cursor", "", "the cursor a previous page printed")
	return cmd
}

func newOpsShowCmd(cli *cliOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "show one operation: its state, where it is now, its legacy row",
		Args:  withUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return show(cmd, cli, 200, func(ctx context.Context, c *api.ClientWithResponses) (*api.GetOperationResponse, error) {
				return c.GetOperationWithResponse(ctx, args[0])
			}, func(w io.Writer, res *api.GetOperationResponse) {
				o := res.JSON200
				row := func(k, v string) {
					if v != "" {
						fmt.Fprintf(w, "%s:\t%s\n", k, v)
					}
				}
				status := string(o.Status)
				if o.Conditions != nil {
					status += " (" + strings.Join(*o.Conditions, ",") + ")"
				}
				row("ID", o.Id)
				row("Kind", o.Kind)
				row("Status", status)
				row("Customer", str(o.Customer))
				row("Key", str(o.Key))
				row("Run", fmt.Sprintf("%s (%s, started by %s)", o.RunId, count(o.Runs, "run", "runs"), str(o.StartReason)))
				row("Created", ts(&o.CreatedAt))
				if o.RelaunchedAt != nil {
					row("Relaunched", ts(o.RelaunchedAt)+" ("+count(o.Relaunches, "relaunch", "relaunches")+")")
				}
				row("Updated", ts(&o.UpdatedAt))
				row("Closed", ts(o.ClosedAt))
				now := o.Now
				if now.CurrentStep != nil {
					step := *now.CurrentStep
					if now.Attempt != nil {
						step += fmt.Sprintf(" (attempt %d", *now.Attempt)
						if now.MaxAttempts != nil && *now.MaxAttempts > 0 {
							step += fmt.Sprintf(" of %d", *now.MaxAttempts)
						}
						step += ")"
					}
					row("Current step", step)
				}
				waiting := str(now.WaitingFor)
				if now.ThrottleReason != nil {
					waiting += " (" + *now.ThrottleReason + ")"
				}
				row("Waiting for", waiting)
				row("Next wake-up", ts(now.NextWakeup))
				lastErr := o.LastError
				if now.LastError != nil {
					lastErr = now.LastError // a failed attempt of the step in flight, say
				}
				row("Last error", errText(lastErr))
				if o.CancelRequested != nil && *o.CancelRequested {
					row("Cancel requested", str(o.CancelReason))
				}
				if o.Input != nil {
					row("Input", string(*o.Input))
				}
				if o.Output != nil {
					row("Output", string(*o.Output))
				}
				if o.Signals != nil {
					var names []string
					for _, s := range *o.Signals {
						names = append(names, s.Name)
					}
					list := strings.Join(names, ", ")
					switch {
					case o.KindRegistered == nil || *o.KindRegistered:
					case o.SignalsSource != nil && *o.SignalsSource == api.SignalsPublished:
						list += " (this server does not register " + o.Kind + "; its workers published these"
						if o.SignalsPublishedBy != nil && o.SignalsPublishedAt != nil {
							list += ": " + *o.SignalsPublishedBy + " at " + o.SignalsPublishedAt.UTC().Format(time.RFC3339)
						}
						list += ")"
					default:
						list += " (this server does not register " + o.Kind + " and no worker of it published its signals; start one, or send them from a server that registers it)"
					}
					row("Signals", list)
				}
				if o.Legacy != nil {
					b, _ := json.Marshal(*o.Legacy)
					row("Legacy row", string(b))
				}
			})
		},
	}
}

func newOpsHistoryCmd(cli *cliOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "history ID",
		Short: "show an operation's timeline: runs, steps, attempts, signals and operator actions",
		Args:  withUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return show(cmd, cli, 200, func(ctx context.Context, c *api.ClientWithResponses) (*api.GetOperationHistoryResponse, error) {
				return c.GetOperationHistoryWithResponse(ctx, args[0])
			}, func(w io.Writer, res *api.GetOperationHistoryResponse) {
				fmt.Fprintln(w, "TIME\tEVENT\tNAME\tSTATUS\tATTEMPT\tBY\tREASON\tERROR")
				for _, e := range res.JSON200.Events {
					name := str(e.Name)
					if e.Seq != nil {
						name = fmt.Sprintf("#%d %s %s", *e.Seq, str(e.Kind), name)
					}
					attempt := ""
					if e.Attempt != nil {
						attempt = fmt.Sprint(*e.Attempt)
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ts(&e.At), e.Type, name, str(e.Status), attempt,
						str(e.Actor), str(e.Reason), errText(e.Error))
				}
			})
		},
	}
}

func newOpsCancelCmd(cli *cliOpts) *cobra.Command {
	var reason string
	var dry bool
	cmd := &cobra.Command{
		Use:   "cancel ID --reason TEXT [--dry-run]",
		Short: "cancel an open operation; prints the refund plan",
		Args:  withUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return show(cmd, cli, 200, func(ctx context.Context, c *api.ClientWithResponses) (*api.CancelOperationResponse, error) {
				return c.CancelOperationWithResponse(ctx, args[0], api.CancelRequest{Reason: reason, DryRun: &dry})
			}, func(w io.Writer, res *api.CancelOperationResponse) {
				r := res.JSON200
				// One line says what was done and what the plan is: unknown,
				// nothing, or the table that follows.
				head := fmt.Sprintf("cancellation of %s requested (status %s)", r.Id, r.Status)
				if dry {
					head = fmt.Sprintf("dry run: cancelling %s (status %s)", r.Id, r.Status)
				}
				switch {
				case r.RefundPlanError != nil:
					fmt.Fprintf(w, "%s: the refund plan is unknown: %s\n", head, *r.RefundPlanError)
				case r.RefundPlan == nil || len(*r.RefundPlan) == 0:
					fmt.Fprintf(w, "%s: nothing to compensate\n", head)
				default:
					if dry {
						head += " would run this refund plan"
					}
					fmt.Fprintln(w, head)
					fmt.Fprintln(w, "\nSTEP\tUNDOES\tWITH\tSTATUS\tSTEP STATUS")
					for _, s := range *r.RefundPlan {
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", s.Step, str(s.Activity), s.Undo, s.Status, str(s.StepStatus))
					}
				}
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded in the audit log; required)")
	_ = cmd.MarkFlagRequired("reason")
	cmd.Flags().BoolVar(&dry, "dry-run", false, "show the refund plan a cancellation would run, change nothing")
	return cmd
}

func newOpsRelaunchCmd(cli *cliOpts) *cobra.Command {
	var reason, from string
	var dry bool
	cmd := &cobra.Command{
		Use:   "relaunch ID --reason TEXT [--from-step NAME] [--dry-run]",
		Short: "relaunch a closed operation from before its last failure (or a named step)",
		Long: `Relaunch a closed operation: a new run reuses the steps before the cut
(before the last failed activity, or before the first step named by
--from-step) and runs the rest again. A signal the earlier run received at or
after the cut is not waited for again: the new run receives it again, with the
same payload. --dry-run lists the steps and what becomes of each.`,
		Args: withUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return show(cmd, cli, 200, func(ctx context.Context, c *api.ClientWithResponses) (*api.RelaunchOperationResponse, error) {
				return c.RelaunchOperationWithResponse(ctx, args[0], api.RelaunchRequest{Reason: reason, FromStep: opt(from), DryRun: &dry})
			}, func(w io.Writer, res *api.RelaunchOperationResponse) {
				r := res.JSON200
				if r.DryRun {
					fmt.Fprintf(w, "dry run: relaunching %s would\n", r.Id)
				} else {
					fmt.Fprintf(w, "relaunched %s as run %s\n", r.Id, str(r.RunId))
				}
				fmt.Fprintln(w, "\nSTEP\tKIND\tNAME\tWAS\tNOW")
				for _, s := range r.Reused {
					fmt.Fprintf(w, "#%d\t%s\t%s\t%s\treused\n", s.Seq, s.Kind, s.Name, str(s.Status))
				}
				again := false
				for _, s := range r.Rerun {
					now := "run again"
					if s.Redelivered != nil && *s.Redelivered {
						now, again = "received again, same payload", true
					}
					fmt.Fprintf(w, "#%d\t%s\t%s\t%s\t%s\n", s.Seq, s.Kind, s.Name, str(s.Status), now)
				}
				if again {
					fmt.Fprintln(w, "\nA signal received again is not waited for: the new run gets the earlier run's signal, with its payload.")
				}
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded in the audit log; required)")
	_ = cmd.MarkFlagRequired("reason")
	cmd.Flags().StringVar(&from, "from-step", "", "run again from the first step of this name")
	cmd.Flags().BoolVar(&dry, "dry-run", false, "show which steps would be reused and run again, change nothing")
	return cmd
}

func newOpsSignalCmd(cli *cliOpts) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "signal ID NAME [PAYLOAD-JSON] --reason TEXT",
		Short: "send a declared signal; its payload is checked against the declared type",
		Long: `Sends a signal the operation's kind declares. The server checks the payload first: against
the declared Go type when it registers the kind (your worker binary serving the API), or else
(graft server) against the JSON Schema the kind's workers published when they started (graft
ops show lists them, saying who published them and when). A kind no worker has published
takes only cancel's graft.cancel.operator here.`,
		Args: withUsage(cobra.RangeArgs(2, 3)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return show(cmd, cli, 202, func(ctx context.Context, c *api.ClientWithResponses) (*api.SignalOperationResponse, error) {
				req := api.SignalRequest{Name: args[1], Reason: reason}
				if len(args) == 3 {
					if !json.Valid([]byte(args[2])) {
						return nil, fmt.Errorf("the payload is not valid JSON: %s", args[2])
					}
					raw := json.RawMessage(args[2])
					req.Payload = &raw
				}
				return c.SignalOperationWithResponse(ctx, args[0], req)
			}, func(w io.Writer, _ *api.SignalOperationResponse) {
				fmt.Fprintf(w, "signal %s sent to %s\n", args[1], args[0])
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded in the audit log; required)")
	_ = cmd.MarkFlagRequired("reason")
	return cmd
}
