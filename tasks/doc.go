// Package tasks moves a legacy job runner's operations onto graft workflows,
// one kind and one key at a time, behind feature flags, without ever
// processing an operation twice.
//
// # Pieces
//
//   - A Source declares the legacy table (in Go, or in YAML/JSON with
//     LoadSource): its ID column (the operation ID becomes the workflow ID),
//     kind column and the workflow of each kind, routing key (a column, a
//     column's TLD, or a Go function), status column with its pending and
//     taken values, optional customer and error columns, and how a row
//     becomes the workflow's input. NewIntake checks it against the
//     database; errors name the field and the column.
//   - Flags route operations: per kind, a kill switch, key rules (exact keys
//     with a percentage) and a default percentage; and a global kill switch.
//     An operation's bucket is md5(kind + ":" + operation ID) (Bucket), so
//     raising a percentage only adds operations to graft. Evaluate is the
//     pure function that decides; the SQL function route_decision in graft's
//     schema decides the same. Every change is versioned (a change made
//     against a stale version fails with a *VersionConflictError) and
//     audited, and is announced with NOTIFY. A key rule's keys are keys as
//     the source's transform derives them: NewIntake records the transform
//     with its kinds, and Flags.Set (and Intake.PreviewFlag) refuse a key
//     the transform would change, which could never match
//     (Flag.ValidateKeys); rules stored before are kept and named by
//     Flags.KeyRuleProblems.
//   - Intake claims pending rows in batches: in one transaction it reads the
//     flags, locks rows the flags route to graft (FOR UPDATE SKIP LOCKED),
//     marks them taken, starts their workflows with
//     engine.Client.StartManyTx and records each decision (flag set version,
//     rule, bucket) in intake_claims. The rows are marked before the starts,
//     so a sync mirror in the same database that maps StatePending writes
//     its value over intake's in the same commit. A mirror that writes
//     the source's pending value back would have the row claimed again on
//     every pass: intake refuses such a batch with an error saying so. Submit does the same for one operation that legacy code
//     hands over instead of inserting a row.
//
// # Guarantees
//
//   - An operation is processed once: a row is taken by whoever changes its
//     status from pending first, under a row lock, and intake's claim and the
//     workflow's start commit together (a crash before the commit leaves the
//     row pending and no run; after it, both exist). This holds whatever the
//     legacy runner's query looks like, as long as it takes rows with
//     UPDATE ... WHERE status = 'pending'.
//   - The split follows the flags exactly when the legacy runner adds the
//     predicate AND NOT graft.routed_to_graft(kind, key, id::text) to its
//     claim (see the README): it then skips what graft will take. Without it
//     each row is still processed once, but the runner may take rows the
//     flags give to graft.
//   - Rows routed to the legacy path are left as they are: with a key that
//     SQL can compute (a column, optionally lower-cased or its TLD) intake
//     does not even lock them; with a Go key function it locks them for the
//     length of one claim transaction.
//   - The kill switches are read inside each claim transaction, holding the
//     flag set's row lock: once a change has committed, no claim made under
//     the earlier flags can still commit. Operations already started
//     continue.
//   - A row that cannot be started (its input does not decode, its key
//     function fails) is left pending, with the error in Source.Error when
//     set; intake goes on with the others and tries it again on its next
//     pass over the table.
//   - Flags.Snapshot serves reads from a cache that a change notification
//     clears; without notifications (a lost connection) it is re-read after
//     FlagsConfig.MaxStale (1 s).
//
// # Imports
//
// tasks imports engine and internal packages; the HTTP API (tasks/api) and
// the CLI build on it.
package tasks
