// Command graft is graft's CLI: the operations server, migrations, the
// operations and token commands that speak to a server through the
// generated client, and the benchmarks.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/graftdev/graft/internal/devenv"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "graft:", err)
		os.Exit(1)
	}
}

// newRootCmd builds the command tree. Each command's flags live in the
// closure that builds it: no package-level state.
func newRootCmd() *cobra.Command {
	cli := &cliOpts{}
	root := &cobra.Command{
		Use:   "graft",
		Short: "graft: durable workflows grafted onto an existing operations database",
		Long: `graft runs durable workflows on PostgreSQL beside a legacy operations table.

Environment:
  GRAFT_DATABASE_URL  default ` + devenv.DefaultDatabaseURL + `
  GRAFT_REDIS_URL     default ` + devenv.DefaultRedisURL + `
  GRAFT_SERVER        the operations server the client commands speak to (default http://127.0.0.1:8080)
  GRAFT_TOKEN         the bearer token they send`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRun: func(cmd *cobra.Command, _ []string) {
			cli.out = cmd.OutOrStdout()
		},
	}
	root.PersistentFlags().StringVar(&cli.server, "server", envOr("GRAFT_SERVER", "http://127.0.0.1:8080"), "operations server URL (GRAFT_SERVER)")
	secretFlag(root.PersistentFlags(), &cli.token, "token", "GRAFT_TOKEN", "bearer token (GRAFT_TOKEN)")
	root.PersistentFlags().StringVarP(&cli.output, "output", "o", "table", "output: table (for people) or json (for scripts)")
	root.AddCommand(newBenchCmd(), newMigrateCmd(), newRecordsCmd(), newServerCmd(), newOpsCmd(cli), newTokensCmd(cli), newFlagsCmd(cli), newBulkCmd(cli))
	namedAsFlags(root)
	return root
}

// newBenchCmd hands its arguments, unparsed, to the flag-based benchmark
// entry, so every bench flag and scenario works as it always has.
func newBenchCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "bench [flags]",
		Short:              "run a benchmark against the configured PostgreSQL (see graft bench -h)",
		DisableFlagParsing: true,
		RunE: func(_ *cobra.Command, args []string) error {
			return runBench(args)
		},
	}
}

func newMigrateCmd() *cobra.Command {
	var schema string
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "create or upgrade graft's schema (the engine's tables and the API's)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runMigrate(cmd.Context(), schema)
		},
	}
	cmd.Flags().StringVar(&schema, "schema", "graft", "graft's schema")
	return cmd
}

// secretFlag registers a string flag that defaults to the environment
// variable env without --help printing that default: a token or a key
// shown there ends up in a terminal's scrollback or a pasted bug report.
func secretFlag(fs *pflag.FlagSet, p *string, name, env, usage string) {
	fs.StringVar(p, name, os.Getenv(env), usage)
	fs.Lookup(name).DefValue = ""
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
