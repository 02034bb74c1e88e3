package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/lib/pq"
	"github.com/spf13/cobra"

	"github.com/graftdev/graft/engine"
)

// runStatuses are the statuses a run's record may be listed by.
func runStatuses() []string {
	return []string{string(engine.StatusPending), string(engine.StatusRunning), string(engine.StatusWaiting), string(engine.StatusCompleted),
		string(engine.StatusFailed), string(engine.StatusCancelled), string(engine.StatusContinued), string(engine.StatusReset)}
}

// newRecordsCmd exports run records for a replay test: the CLI cannot
// replay them itself, as it does not hold the user's workflow code; the
// user's test does (grafttest.ReplayFile).
func newRecordsCmd() *cobra.Command {
	var schema, out, workflowType string
	var statuses, runIDs []string
	var limit int
	cmd := &cobra.Command{
		Use:   "records --out FILE [--schema S] [--type T] [--status S]... [--limit N] [--run ID]...",
		Short: "export runs' records to a JSON file, for a test that replays them with new code (grafttest.ReplayFile) before a deploy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return fmt.Errorf("graft records: --out is required (a file, or - for standard output)")
			}
			f := engine.ListFilter{WorkflowType: workflowType, Limit: limit}
			for _, s := range statuses {
				if !slices.Contains(runStatuses(), s) {
					return fmt.Errorf("graft records: --status %q is not a run status (%s)", s, strings.Join(runStatuses(), ", "))
				}
				f.Statuses = append(f.Statuses, engine.Status(s))
			}
			ctx := cmd.Context()
			c, err := engine.NewClient(engine.ClientConfig{DatabaseURL: databaseURL(), Schema: schema})
			if err != nil {
				return err
			}
			defer c.Close()
			var runs []*engine.RecordedRun
			if len(runIDs) > 0 {
				for _, id := range runIDs {
					r, err := c.Record(ctx, id)
					if err != nil {
						return fmt.Errorf("graft records: run %s: %w", id, err)
					}
					runs = append(runs, r)
				}
			} else if runs, err = c.Records(ctx, f); err != nil {
				if pe := (*pq.Error)(nil); errors.As(err, &pe) && pe.Code == "42P01" { // undefined_table
					return fmt.Errorf("graft records: schema %q holds no graft runs table (--schema names the schema your engine uses; graft migrate --schema creates one): %w", schema, err)
				}
				return err
			}
			b, err := engine.WriteRecords(runs)
			if err != nil {
				return err
			}
			if out == "-" {
				_, err = cmd.OutOrStdout().Write(append(b, '\n'))
				return err
			}
			// Records hold inputs and results: customer data, readable by the owner only.
			if err := os.WriteFile(out, b, 0o600); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "%d runs written to %s\n", len(runs), out)
			return nil
		},
	}
	cmd.Flags().StringVar(&schema, "schema", engine.DefaultSchema, "graft's schema")
	cmd.Flags().StringVar(&out, "out", "", "the file to write (- for standard output)")
	cmd.Flags().StringVar(&workflowType, "type", "", "only runs of this workflow type")
	cmd.Flags().StringSliceVar(&statuses, "status", nil, "only runs in these statuses (pending, running, waiting: the runs a deploy resumes)")
	cmd.Flags().IntVar(&limit, "limit", engine.DefaultListLimit, fmt.Sprintf("at most this many runs, newest first (at most %d)", engine.MaxListLimit))
	cmd.Flags().StringSliceVar(&runIDs, "run", nil, "these runs only, by run ID")
	return cmd
}
