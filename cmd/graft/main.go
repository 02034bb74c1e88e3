// Command graft is graft's CLI: the benchmark, migrations and (later) the
// operations server.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "bench":
		err = runBench(os.Args[2:])
	case "migrate":
		err = runMigrate(os.Args[2:])
	case "help", "-h", "--help":
		usage()
		return
	default:
		fmt.Fprintf(os.Stderr, "graft: unknown command %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "graft:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage: graft <command> [flags]

commands:
  bench     run a benchmark against the configured PostgreSQL (see graft bench -h)
  migrate   create or upgrade graft's schema

environment:
  GRAFT_DATABASE_URL  default postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable&binary_parameters=yes
  GRAFT_REDIS_URL     default redis://127.0.0.1:6379/0
`)
}
