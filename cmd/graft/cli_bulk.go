package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/graftdev/graft/tasks/api"
)

func newBulkCmd(cli *cliOpts) *cobra.Command {
	cmd := &cobra.Command{Use: "bulk", Short: "relaunch, cancel or signal every operation a filter matches, as a durable job"}
	cmd.AddCommand(newBulkActionCmd(cli, api.BulkActionRelaunch), newBulkActionCmd(cli, api.BulkActionCancel),
		newBulkActionCmd(cli, api.BulkActionSignal), newBulkListCmd(cli), newBulkStatusCmd(cli), newBulkReportCmd(cli),
		newBulkControlCmd(cli, "pause"), newBulkControlCmd(cli, "resume"), newBulkControlCmd(cli, "stop"), newBulkRetryCmd(cli))
	return cmd
}

// bulkFollow are the flags of commands that watch a job to its end.
type bulkFollow struct {
	detach bool
	poll   time.Duration
}

func (f *bulkFollow) add(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.detach, "detach", false, "start the job and return; do not wait for its end")
	cmd.Flags().DurationVar(&f.poll, "poll", time.Second, "how often to read the job's progress")
}

func newBulkActionCmd(cli *cliOpts, action api.BulkAction) *cobra.Command {
	f := &filterFlags{}
	follow := &bulkFollow{}
	var ids, exclude []string
	var rate float64
	var reason, fromStep string
	var dryRun bool
	use, args, short := string(action)+" [filter flags] --reason TEXT", cobra.NoArgs, ""
	switch action {
	case api.BulkActionRelaunch:
		short = "relaunch the matching closed operations from before their failed step"
	case api.BulkActionCancel:
		short = "cancel the matching open operations (their refunds run)"
	case api.BulkActionSignal:
		use, args, short = "signal NAME [PAYLOAD-JSON] [filter flags] --reason TEXT", withUsage(cobra.RangeArgs(1, 2)),
			"send a declared signal to the matching open operations"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Long: short + `.

The job runs in the server at --rate operations a second, survives a restart
of the server, and acts on each operation at most once. --dry-run shows how
many it would act on, a sample, and those it would skip and why. Without
--detach the command shows the job's progress (on stderr) and its report
at the end; Ctrl-C stops watching, not the job (graft bulk pause|stop ID).`,
		Args: args,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cli.client()
			if err != nil {
				return err
			}
			p, err := f.params()
			if err != nil {
				return err
			}
			filter := api.BulkFilter{Kind: p.Kind, Key: p.Key, Customer: p.Customer, FailingStep: p.FailingStep,
				ErrorType: p.ErrorType, CreatedAfter: p.CreatedAfter, CreatedBefore: p.CreatedBefore, Status: p.Status}
			if p.Route != nil {
				filter.Route = (*api.Route)(p.Route)
			}
			if len(ids) > 0 {
				filter.Ids = &ids
			}
			req := api.BulkRequest{Action: action, Filter: &filter, Reason: reason, DryRun: &dryRun}
			if cmd.Flags().Changed("rate") {
				req.Rate = &rate
			}
			if len(exclude) > 0 {
				req.Exclude = &exclude
			}
			if fromStep != "" {
				req.FromStep = &fromStep
			}
			if action == api.BulkActionSignal {
				sig := api.BulkSignal{Name: args[0]}
				if len(args) == 2 {
					if !json.Valid([]byte(args[1])) {
						return fmt.Errorf("the payload is not valid JSON: %s", args[1])
					}
					raw := json.RawMessage(args[1])
					sig.Payload = &raw
				}
				req.Signal = &sig
			}
			want := 201
			if dryRun {
				want = 200
			}
			res, err := call(cmd.Context(), c, want, func(ctx context.Context, c *api.ClientWithResponses) (*api.CreateBulkJobResponse, error) {
				return c.CreateBulkJobWithResponse(ctx, req)
			})
			if err != nil {
				return err
			}
			if dryRun {
				return cli.emit(res.Body, func(w io.Writer) { printPreview(w, res.JSON200) })
			}
			job := res.JSON201
			if follow.detach {
				return cli.emit(res.Body, func(w io.Writer) { printJob(w, job) })
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "bulk job %s: %s %s at %g/s\n", job.Id, job.Action, count(job.Total, "operation", "operations"), job.Rate)
			return followJob(cmd, cli, c, job.Id, follow.poll)
		},
	}
	f.add(cmd)
	follow.add(cmd)
	fl := cmd.Flags()
	fl.StringSliceVar(&ids, "id", nil, "only these operations (repeat, or separate with commas)")
	fl.StringSliceVar(&exclude, "exclude", nil, "leave these operations out")
	fl.Float64Var(&rate, "rate", api.DefaultBulkRate, "operations per second")
	fl.StringVar(&reason, "reason", "", "why (recorded in the audit log for each operation; required)")
	_ = cmd.MarkFlagRequired("reason")
	fl.BoolVar(&dryRun, "dry-run", false, "show what the job would do and change nothing")
	if action == api.BulkActionRelaunch {
		use += " [--from-step NAME]"
		cmd.Use = use
		fl.StringVar(&fromStep, "from-step", "", "run each operation again from the first step of this name (operations without one are skipped)")
	}
	return cmd
}

func printPreview(w io.Writer, p *api.BulkPreview) {
	fmt.Fprintf(w, "dry run: %s would act on %d of %d matching operations", p.Action, p.Count, p.Matched)
	if p.Excluded > 0 {
		fmt.Fprintf(w, " (%d excluded)", p.Excluded)
	}
	fmt.Fprintln(w)
	if len(p.Sample) > 0 {
		// A relaunch's sample says what the relaunch would do to each: the
		// step it runs again from, and how many steps it reuses and reruns.
		relaunch := p.Action == api.BulkActionRelaunch
		head := "\nSAMPLE\tKIND\tSTATUS\tCUSTOMER"
		if relaunch {
			head += "\tFROM STEP\tREUSED\tRERUN"
		}
		fmt.Fprintln(w, head)
		for _, s := range p.Sample {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s", s.Id, s.Kind, s.Status, str(s.Customer))
			if r := s.Relaunch; relaunch && r != nil {
				fmt.Fprintf(w, "\t%s (#%d)\t%d\t%d", r.FromStep, r.FromSeq, r.Reused, r.Rerun)
			}
			fmt.Fprintln(w)
		}
		if more := p.Count - len(p.Sample); more > 0 {
			fmt.Fprintf(w, "... and %d more\n", more)
		}
	}
	if p.IneligibleCount > 0 {
		fmt.Fprintf(w, "\nSKIPPED (%d)\tWHY\n", p.IneligibleCount)
		for _, in := range p.Ineligible {
			fmt.Fprintf(w, "%s\t%s\n", in.Id, in.Why)
		}
	}
}

func printJob(w io.Writer, j *api.BulkJob) {
	fmt.Fprintf(w, "Job:\t%s\n", j.Id)
	fmt.Fprintf(w, "Action:\t%s\n", j.Action)
	if j.Signal != nil {
		fmt.Fprintf(w, "Signal:\t%s\n", j.Signal.Name)
	}
	if j.FromStep != nil {
		fmt.Fprintf(w, "From step:\t%s\n", *j.FromStep)
	}
	fmt.Fprintf(w, "State:\t%s\n", j.State)
	fmt.Fprintf(w, "Progress:\t%d of %d: %d done, %d failed, %d skipped, %d pending\n", j.Total-j.Pending, j.Total, j.Done, j.Failed, j.Skipped, j.Pending)
	rate := fmt.Sprintf("%g/s asked", j.Rate)
	if j.ActualRate != nil {
		rate += fmt.Sprintf(", %.1f/s so far", *j.ActualRate)
	}
	fmt.Fprintf(w, "Rate:\t%s\n", rate)
	fmt.Fprintf(w, "Reason:\t%s\n", j.Reason)
	fmt.Fprintf(w, "Created:\t%s by %s\n", ts(&j.CreatedAt), j.CreatedBy)
	if j.FinishedAt != nil {
		fmt.Fprintf(w, "Finished:\t%s\n", ts(j.FinishedAt))
	}
	if j.RetryOf != nil {
		fmt.Fprintf(w, "Retries:\t%s\n", *j.RetryOf)
	}
}

func finished(s api.BulkState) bool { return s == api.BulkStateCompleted || s == api.BulkStateStopped }

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// progressBar draws a job's progress on one line.
func progressBar(j *api.BulkJob) string {
	const width = 30
	doneN := j.Total - j.Pending
	fill := width
	if j.Total > 0 {
		fill = doneN * width / j.Total
	}
	rate := ""
	if j.ActualRate != nil {
		rate = fmt.Sprintf(" %.1f/s", *j.ActualRate)
	}
	return fmt.Sprintf("[%s%s] %d/%d done=%d failed=%d skipped=%d%s %s", strings.Repeat("#", fill), strings.Repeat(".", width-fill),
		doneN, j.Total, j.Done, j.Failed, j.Skipped, rate, j.State)
}

// getJob reads bulk job id.
func getJob(id string) func(context.Context, *api.ClientWithResponses) (*api.GetBulkJobResponse, error) {
	return func(ctx context.Context, c *api.ClientWithResponses) (*api.GetBulkJobResponse, error) {
		return c.GetBulkJobWithResponse(ctx, id)
	}
}

// followJob shows job id's progress until it finishes (on stderr when it is
// a terminal, and always for tables), then prints its report.
func followJob(cmd *cobra.Command, cli *cliOpts, c *api.ClientWithResponses, id string, poll time.Duration) error {
	errw := cmd.ErrOrStderr()
	tty := isTerminal(errw)
	show := tty || cli.output == "table"
	last := ""
	for {
		res, err := call(cmd.Context(), c, 200, getJob(id))
		if err != nil {
			if cmd.Context().Err() != nil {
				return fmt.Errorf("stopped watching; bulk job %s goes on (graft bulk status|pause|stop %s)", id, id)
			}
			return err
		}
		j := res.JSON200
		if line := progressBar(j); show && line != last {
			if tty {
				fmt.Fprintf(errw, "\r%s\033[K", line)
			} else {
				fmt.Fprintln(errw, line)
			}
			last = line
		}
		if finished(j.State) {
			if show && tty {
				fmt.Fprintln(errw)
			}
			return printReport(cmd.Context(), cli, c, id, false)
		}
		select {
		case <-cmd.Context().Done():
			if show && tty {
				fmt.Fprintln(errw)
			}
			return fmt.Errorf("stopped watching; bulk job %s goes on (graft bulk status|pause|stop %s)", id, id)
		case <-time.After(poll):
		}
	}
}

// getReport reads bulk job id's report, in format (nil: JSON).
func getReport(id string, format *api.GetBulkReportParamsFormat) func(context.Context, *api.ClientWithResponses) (*api.GetBulkReportResponse, error) {
	return func(ctx context.Context, c *api.ClientWithResponses) (*api.GetBulkReportResponse, error) {
		return c.GetBulkReportWithResponse(ctx, id, &api.GetBulkReportParams{Format: format})
	}
}

// printReport prints a job's report: with -o json the whole report, else
// its summary and the operations not done (all of them with all).
func printReport(ctx context.Context, cli *cliOpts, c *api.ClientWithResponses, id string, all bool) error {
	res, err := call(ctx, c, 200, getReport(id, nil))
	if err != nil {
		return err
	}
	rep := res.JSON200
	return cli.emit(res.Body, func(w io.Writer) {
		j := rep.Job
		fmt.Fprintf(w, "bulk job %s %s: %d done, %d failed, %d skipped, %d pending of %d\n", j.Id, j.State, j.Done, j.Failed, j.Skipped, j.Pending, j.Total)
		var rows []api.BulkReportItem
		for _, it := range rep.Items {
			if all || it.Outcome != "done" {
				rows = append(rows, it)
			}
		}
		if len(rows) == 0 {
			return
		}
		fmt.Fprintln(w, "\nOPERATION\tOUTCOME\tDETAIL\tNEW RUN")
		for _, it := range rows {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", it.Id, it.Outcome, str(it.Detail), str(it.NewRunId))
		}
		if j.Failed > 0 {
			fmt.Fprintf(w, "\nretry the failed ones: graft bulk retry-failed %s\n", j.Id)
		}
	})
}

func newBulkListCmd(cli *cliOpts) *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "list",
		Short: "bulk jobs, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return show(cmd, cli, 200, func(ctx context.Context, c *api.ClientWithResponses) (*api.ListBulkJobsResponse, error) {
				return c.ListBulkJobsWithResponse(ctx, &api.ListBulkJobsParams{Limit: &limit})
			}, func(w io.Writer, res *api.ListBulkJobsResponse) {
				fmt.Fprintln(w, "JOB\tACTION\tSTATE\tTOTAL\tDONE\tFAILED\tSKIPPED\tCREATED\tBY\tREASON")
				for _, j := range res.JSON200.Items {
					fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", j.Id, j.Action, j.State, j.Total, j.Done, j.Failed, j.Skipped,
						ts(&j.CreatedAt), j.CreatedBy, j.Reason)
				}
			})
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 50, "at most this many (1 to 500)")
	return cmd
}

func newBulkStatusCmd(cli *cliOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "status ID",
		Short: "a bulk job's state and progress",
		Args:  withUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return show(cmd, cli, 200, getJob(args[0]), func(w io.Writer, res *api.GetBulkJobResponse) { printJob(w, res.JSON200) })
		},
	}
}

func newBulkReportCmd(cli *cliOpts) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "report ID",
		Short: "a bulk job's outcome per operation (--format csv for a spreadsheet)",
		Args:  withUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cli.client()
			if err != nil {
				return err
			}
			switch format {
			case "":
				return printReport(cmd.Context(), cli, c, args[0], true)
			case "csv":
				f := api.ReportCSV
				res, err := call(cmd.Context(), c, 200, getReport(args[0], &f))
				if err != nil {
					return err
				}
				_, err = cli.stdout().Write(res.Body)
				return err
			}
			return fmt.Errorf("--format %q: use csv, or leave it out for -o table|json", format)
		},
	}
	cmd.Flags().StringVar(&format, "format", "", "csv: the report as CSV")
	return cmd
}

func newBulkControlCmd(cli *cliOpts, what string) *cobra.Command {
	var reason string
	short := map[string]string{"pause": "pause a running bulk job after the operations in hand",
		"resume": "resume a paused bulk job", "stop": "stop a bulk job for good (the rest are reported skipped)"}[what]
	cmd := &cobra.Command{
		Use:   what + " ID",
		Short: short,
		Args:  withUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			body := api.BulkControl{Reason: opt(reason)}
			state := func(w io.Writer, job *api.BulkJob) { fmt.Fprintf(w, "bulk job %s is %s\n", job.Id, job.State) }
			switch what {
			case "pause":
				return show(cmd, cli, 200, func(ctx context.Context, c *api.ClientWithResponses) (*api.PauseBulkJobResponse, error) {
					return c.PauseBulkJobWithResponse(ctx, args[0], body)
				}, func(w io.Writer, res *api.PauseBulkJobResponse) { state(w, res.JSON200) })
			case "resume":
				return show(cmd, cli, 200, func(ctx context.Context, c *api.ClientWithResponses) (*api.ResumeBulkJobResponse, error) {
					return c.ResumeBulkJobWithResponse(ctx, args[0], body)
				}, func(w io.Writer, res *api.ResumeBulkJobResponse) { state(w, res.JSON200) })
			}
			return show(cmd, cli, 200, func(ctx context.Context, c *api.ClientWithResponses) (*api.StopBulkJobResponse, error) {
				return c.StopBulkJobWithResponse(ctx, args[0], body)
			}, func(w io.Writer, res *api.StopBulkJobResponse) { state(w, res.JSON200) })
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded in the audit log)")
	return cmd
}

func newBulkRetryCmd(cli *cliOpts) *cobra.Command {
	follow := &bulkFollow{}
	var reason string
	var rate float64
	cmd := &cobra.Command{
		Use:   "retry-failed ID",
		Short: "a new job with the same action over the operations a finished job failed on",
		Args:  withUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cli.client()
			if err != nil {
				return err
			}
			body := api.BulkRetry{Reason: opt(reason)}
			if cmd.Flags().Changed("rate") {
				body.Rate = &rate
			}
			res, err := call(cmd.Context(), c, 201, func(ctx context.Context, c *api.ClientWithResponses) (*api.RetryFailedBulkJobResponse, error) {
				return c.RetryFailedBulkJobWithResponse(ctx, args[0], body)
			})
			if err != nil {
				return err
			}
			job := res.JSON201
			if follow.detach {
				return cli.emit(res.Body, func(w io.Writer) { printJob(w, job) })
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "bulk job %s retries %s of %s\n", job.Id, count(job.Total, "operation", "operations"), args[0])
			return followJob(cmd, cli, c, job.Id, follow.poll)
		},
	}
	follow.add(cmd)
	cmd.Flags().StringVar(&reason, "reason", "", "why (default the original job's)")
	cmd.Flags().Float64Var(&rate, "rate", 0, "operations per second (default the original job's)")
	return cmd
}
