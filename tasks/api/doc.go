// Package api is graft's operations API: the HTTP server operators,
// customers and tools use to track operations (durable workflow runs, joined
// with their legacy rows) and act on them, and the generated Go client the
// CLI speaks through.
//
// # Spec first
//
// openapi.yaml is the source. The server interface, the models and the
// client in api.gen.go are generated from it by oapi-codegen (pinned with a
// tool directive in go.mod; `go generate ./tasks/api`), and a test
// regenerates them and fails when the committed code is stale. Routing is
// the standard library's net/http.ServeMux. The document is served at
// /openapi.yaml.
//
// # Security
//
// Every /v1 request carries a bearer token. A token is "graft_<id>_<secret>"
// with 256 random bits of secret, shown once when it is created; graft keeps
// only the secret's SHA-256 and compares it in constant time. Tokens expire
// (90 days by default), can be revoked at once, and record their last use
// (at most once a minute). Roles: admin (everything, and tokens), operator
// (reads and acts on every operation), viewer (reads), customer (reads the
// operations whose run header Config.CustomerHeader equals its customer, and
// cancels them when Config.CustomerMayCancel is set). A customer asking for
// any other operation, on any route, gets exactly the 404 a missing
// operation gets. Every action (start, cancel, relaunch, signal, token
// changes) is recorded in the api_audit table with who, when and why, and
// appears in the operation's history.
//
// # Operations
//
// An operation is the latest run of a workflow ID. The list filters by
// status (the engine's, and the conditions waiting_signal and
// needs_operator), kind, key and customer (run headers), failing step,
// error type and creation time, pages by keyset (created_at, run_id), and
// counts each status for the filter. GET shows the run, its last error,
// where it is now, the signals its kind declares (engine.DeclareSignal) and,
// with Config.Legacy, the legacy row (tasks.Intake.Row reads it as the
// intake's source declares it). History merges runs, steps, the flag
// decision intake recorded when it claimed the operation, and operator
// actions into one timeline. Cancel returns the refund plan
// (package cancel); relaunch is an engine reset from before the last failed
// activity or from a named step, refused with 409 while the operation is
// open; a signal is checked against its declared payload type before it is
// sent.
//
// # Errors
//
// Every error is an RFC 9457 application/problem+json document; bad input
// names its field. Bodies are limited (Config.MaxBodyBytes), must be JSON,
// and may not carry fields the schema does not name. A refused request
// changes nothing.
//
// Package api imports engine, cancel (for compensation state) and tasks (for
// the flags, intake's run headers and its recorded decisions), and nothing
// else of graft's.
package api
