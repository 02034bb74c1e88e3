package engine

import (
	"database/sql"
	"fmt"
	"strings"
	"time"
)

// A batch of rows travels to PostgreSQL as one array parameter per column,
// unnested back into rows by the statement (see pgArray). The columns of
// such a statement are declared once, as an unnestCols list: the unnest
// clause (its placeholders, their casts and the row alias's column names)
// and the arguments that fill it are both made from that list, so a column
// cannot be sent in one position and read in another.

// unnestCol is one column of a batch: its name in the statement's row
// alias, its element type, how one row's value is written into the
// column's array, and that value as a parameter of its own (val, for a
// VALUES list: nil is NULL). The constructors below pair each SQL type
// with the writers that render it, so a cast cannot disagree with what is
// sent.
type unnestCol[R any] struct {
	name, typ string
	put       func(a *pgArray, r R)
	val       func(r R) any
	// time, set for a timestamptz column, is its value, which a VALUES
	// list's parameter gets as text (see unnestBatch.argsAs).
	time func(r R) sql.NullTime
	// str, set for a text column, is its value (false: NULL), which a
	// VALUES list's parameter gets as bytes (see unnestBatch.argsAs).
	str func(r R) (string, bool)
}

func textCol[R any](name string, get func(R) string) unnestCol[R] {
	return unnestCol[R]{name, "text", func(a *pgArray, r R) { a.str(get(r)) }, func(r R) any { return get(r) }, nil,
		func(r R) (string, bool) { return get(r), true }}
}

// optTextCol sends the empty string as NULL.
func optTextCol[R any](name string, get func(R) string) unnestCol[R] {
	return unnestCol[R]{name, "text", func(a *pgArray, r R) { a.optStr(get(r)) }, func(r R) any {
		if s := get(r); s != "" {
			return s
		}
		return nil
	}, nil, func(r R) (string, bool) {
		s := get(r)
		return s, s != ""
	}}
}

func nullTextCol[R any](name string, get func(R) sql.NullString) unnestCol[R] {
	return unnestCol[R]{name, "text", func(a *pgArray, r R) { a.nullStr(get(r)) }, func(r R) any {
		if s := get(r); s.Valid {
			return s.String
		}
		return nil
	}, nil, func(r R) (string, bool) {
		s := get(r)
		return s.String, s.Valid
	}}
}

func intCol[R any](name string, get func(R) int) unnestCol[R] {
	return unnestCol[R]{name, "int", func(a *pgArray, r R) { a.int(int64(get(r))) }, func(r R) any { return int64(get(r)) }, nil, nil}
}

func bigintCol[R any](name string, get func(R) int64) unnestCol[R] {
	return unnestCol[R]{name, "bigint", func(a *pgArray, r R) { a.int(get(r)) }, func(r R) any { return get(r) }, nil, nil}
}

func nullIntCol[R any](name string, get func(R) sql.NullInt64) unnestCol[R] {
	return unnestCol[R]{name, "int", func(a *pgArray, r R) { a.nullInt(get(r)) }, nullIntVal(get), nil, nil}
}

func nullBigintCol[R any](name string, get func(R) sql.NullInt64) unnestCol[R] {
	return unnestCol[R]{name, "bigint", func(a *pgArray, r R) { a.nullInt(get(r)) }, nullIntVal(get), nil, nil}
}

func nullIntVal[R any](get func(R) sql.NullInt64) func(R) any {
	return func(r R) any {
		if v := get(r); v.Valid {
			return v.Int64
		}
		return nil
	}
}

// byteaCol's parameter is the bytes themselves: lib/pq sends them in
// binary with binary_parameters, and as bytea's hex text without.
func byteaCol[R any](name string, get func(R) []byte) unnestCol[R] {
	return unnestCol[R]{name, "bytea", func(a *pgArray, r R) { a.bytes(get(r)) }, func(r R) any {
		if b := get(r); b != nil {
			return b
		}
		return nil
	}, nil, nil}
}

// jsonbCol sends JSON held in bytes (nil is NULL), as text: with
// binary_parameters a byte slice would be taken for jsonb's binary format.
func jsonbCol[R any](name string, get func(R) []byte) unnestCol[R] {
	return unnestCol[R]{name, "jsonb", func(a *pgArray, r R) { a.jsonText(get(r)) }, func(r R) any {
		if b := get(r); b != nil {
			return string(b)
		}
		return nil
	}, nil, nil}
}

func boolCol[R any](name string, get func(R) bool) unnestCol[R] {
	return unnestCol[R]{name, "boolean", func(a *pgArray, r R) {
		if get(r) {
			a.str("t")
		} else {
			a.str("f")
		}
	}, func(r R) any { return get(r) }, nil, nil}
}

func timeCol[R any](name string, get func(R) sql.NullTime) unnestCol[R] {
	return unnestCol[R]{name, "timestamptz", func(a *pgArray, r R) { a.time(get(r)) }, func(r R) any {
		if t := get(r); t.Valid {
			return t.Time
		}
		return nil
	}, get, nil}
}

// unnestCols is the declared column list of one kind of batch, R being
// what one row is made from.
type unnestCols[R any] []unnestCol[R]

func newUnnest[R any](cols ...unnestCol[R]) unnestCols[R] { return cols }

// param is the parameter ("$n") column name takes in a clause rendered by
// sql(p, ...); it panics on a name the list does not have (a programming
// error, met when the statements are built at start-up).
func (u unnestCols[R]) param(p int, name string) string {
	for i, c := range u {
		if c.name == name {
			return fmt.Sprintf("$%d", p+i+1)
		}
	}
	panic("engine: no unnest column " + name)
}

// sql renders the batch's rows as the subquery "(SELECT
// unnest($p+1::text::t1[]) AS c1, unnest($p+2::text::t2[]) AS c2, ...
// LIMIT cardinality($p+1::text::t1[])) AS alias": the columns take
// parameters $p+1..$p+len(u), in the list's order, each an array literal
// as text (see args).
//
// The unnests are in the select list, where PostgreSQL runs them in step
// (a ProjectSet node: row i of every array, then row i+1), not in FROM:
// there "unnest(a, b, ...)" is one function scan per array, each
// materialised into a tuple store of its own before the first row is
// read, and each set up at every execution. For a commit statement (about
// 60 arrays) that was 7-13% of its backend CPU at every batch size (see
// the README's Benchmarks section).
//
// The LIMIT keeps every row (all the arrays have the batch's length); it is
// there for the generic plan of a prepared statement (see hotStmt), which
// cannot see the arrays. PostgreSQL guesses an unnested array parameter at
// 10 rows, and 10 index probes cost more in its model than one sequential
// scan and hash of a table of under about 60 pages: a fresh or small
// deployment's runs table (300 runs at bench -c 1 are 30 pages). So the
// plans of the commit path read the whole runs table at each commit, and
// kept doing so as it grew, until an ANALYZE or the statement's next
// preparation. A LIMIT it cannot evaluate at planning time it guesses at
// 10% of its input: one row, which the plan finds by its key (an index
// probe) in a table of any size that was never analysed (PostgreSQL then
// assumes at least 10 pages) or that has more than a few pages. A custom
// plan sees the arrays and the exact count either way.
func (u unnestCols[R]) sql(p int, alias string) string {
	var b strings.Builder
	b.WriteString("(SELECT ")
	for i, c := range u {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "unnest($%d::text::%s[]) AS %s", p+i+1, c.typ, c.name)
	}
	fmt.Fprintf(&b, " LIMIT cardinality($%d::text::%s[])) AS %s", p+1, u[0].typ, alias)
	return b.String()
}

// valuesRows is the most rows a commit statement's arm sends as a VALUES
// list of one parameter per cell (see unnestCols.from) rather than as
// unnested arrays.
const valuesRows = 2

// from renders the batch's rows for a statement that takes them as one
// array per column (rows 0: sql) or as a VALUES list of exactly rows rows,
// one parameter per cell, row after row: "(SELECT * FROM (VALUES
// ($p+1::t1, ...), (...)) AS alias(c1, ...) LIMIT (SELECT rows)) AS
// alias". For a row or two the list costs PostgreSQL less than the
// arrays, each parsed at every execution: for two step records (19
// columns, against 38 parameters of plain types) that was 15-25 µs of a
// backend's CPU a statement, a sixth of its work before its commit; for a
// step and a run's end, or a run's insert and its first step, 30-35 µs
// (measured while sql unnested the arrays in FROM, each into a tuple store
// of its own).
//
// The LIMIT, which keeps every row, is sql's, for the same reason: a plan
// that knows of two rows probes a table of a few pages (a new deployment's
// runs, never analysed) by a sequential scan and a hash instead of two
// index probes, and a generic plan made then keeps doing so as the table
// grows. A LIMIT whose value the planner cannot see it guesses at a tenth
// of its input, one row, found by its key.
func (u unnestCols[R]) from(p int, alias string, rows int) string {
	if rows == 0 {
		return u.sql(p, alias)
	}
	var b strings.Builder
	b.WriteString("(SELECT * FROM (VALUES ")
	for r := 0; r < rows; r++ {
		if r > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for i, c := range u {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "$%d::%s", p+r*len(u)+i+1, c.typ)
		}
		b.WriteByte(')')
	}
	b.WriteString(") AS " + alias + "(")
	for i, c := range u {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(c.name)
	}
	fmt.Fprintf(&b, ") LIMIT (SELECT %d)) AS %s", rows, alias)
	return b.String()
}

// params is the number of parameters from(p, alias, rows) takes.
func (u unnestCols[R]) params(rows int) int {
	return len(u) * max(rows, 1)
}

// batch starts an empty batch of these columns, with room for n rows.
func (u unnestCols[R]) batch(n int) unnestBatch[R] {
	return unnestBatch[R]{cols: u, rows: make([]R, 0, n)}
}

// batchIn is batch with its arguments built in p (see paramBuf).
func (u unnestCols[R]) batchIn(p *paramBuf, n int) unnestBatch[R] {
	return unnestBatch[R]{cols: u, rows: make([]R, 0, n), buf: p}
}

// unnestBatch collects rows; args renders them into one array per column.
type unnestBatch[R any] struct {
	cols unnestCols[R]
	rows []R
	// buf is the writer's memory the arguments are built in (nil: their
	// own).
	buf *paramBuf
}

// add adds a row to the batch.
func (b *unnestBatch[R]) add(r R) {
	b.rows = append(b.rows, r)
}

// argsAs appends the rows as the arguments of from(p, alias, rows): the
// column arrays (rows 0, see args) or each row's cells in turn (the batch
// has exactly rows rows).
func (b *unnestBatch[R]) argsAs(args []any, rows int) []any {
	if rows == 0 {
		return b.args(args)
	}
	// A text cell goes as a slice of one buffer of the list's text cells
	// (the writer's, see paramBuf; a non-empty one: an empty string costs
	// nothing): lib/pq copies a
	// string argument into bytes of its own before sending it, and sends
	// bytes as they are; with binary_parameters, as the binary form of
	// text, which is its text (text's receive function reads it as its
	// input function does, with the same encoding check), and without it,
	// as text. A time is sent as the text pgArray.time writes into an array
	// (RFC 3339 in UTC, to the nanosecond), not as a time.Time: lib/pq
	// formats those through time.Format's layout, with the zone's offset,
	// and copies the result twice; PostgreSQL reads both as the same
	// instant. The list's times are written into one buffer, each argument
	// a slice of the one string it becomes. A year outside 1-9999, which
	// RFC 3339 cannot write, goes to lib/pq as a time.Time (it writes BC
	// years as PostgreSQL reads them).
	var room [256]byte
	times := room[:0]
	type cell struct {
		arg, start, end int
		s               string
	}
	var cells [24]cell
	timeCells, textCells := cells[:0:8], cells[8:8]
	textLen := 0
	for _, r := range b.rows {
		for i := range b.cols {
			c := &b.cols[i]
			switch {
			case c.str != nil:
				if s, ok := c.str(r); ok && s != "" {
					textCells = append(textCells, cell{arg: len(args), s: s})
					textLen += len(s)
					args = append(args, nil)
					continue
				}
			case c.time != nil:
				if t := c.time(r); t.Valid {
					if u := t.Time.UTC(); rfc3339Year(u) {
						start := len(times)
						times = u.AppendFormat(times, time.RFC3339Nano)
						timeCells = append(timeCells, cell{arg: len(args), start: start, end: len(times)})
						args = append(args, nil)
						continue
					}
				}
			}
			args = append(args, c.val(r))
		}
	}
	if len(timeCells) > 0 {
		s := string(times)
		for _, c := range timeCells {
			args[c.arg] = s[c.start:c.end]
		}
	}
	if len(textCells) > 0 {
		text := grow(b.buf.grab(), textLen)
		for _, c := range textCells {
			start := len(text)
			text = append(text, c.s...)
			args[c.arg] = text[start:len(text):len(text)]
		}
		b.buf.keep(text)
	}
	return args
}

// rfc3339Year reports whether RFC 3339 can write t's year (1-9999; year 0
// is 1 BC to PostgreSQL).
func rfc3339Year(t time.Time) bool {
	y := t.Year()
	return y >= 1 && y <= 9999
}

// A column of a batch without rows is sent as NULL, which unnest reads as
// no rows (and LIMIT cardinality(NULL) as no limit): most commits send an
// empty column list or two (a batch of step records has no run
// transitions; a run's first commit has no steps of runs already
// inserted), and lib/pq copies every non-NULL argument into a buffer of
// its own before it sends it, 46 allocations a workflow of three
// activities for the 46 empty columns of its four commits.
//
// A column whose every cell is NULL, other than the first, is sent as NULL
// too: unnest gives it no rows, and the unnests of a select list run in
// step, the shorter ones' rows filled with NULLs up to the longest's (the
// first column's, which the LIMIT reads too). Most of a commit's
// columns of step records (error, fire_at, signal_id, child_workflow_id,
// attempt_started_at, next_attempt_at, attempt_log) and of run inserts
// (the parent's and previous run's) are NULL in every row: at bench -c 256
// that was an eighth of a commit's parameters' bytes, which lib/pq writes
// into a message grown by doubling.

// unnestCellBytes is a guess at the bytes one cell takes in an array
// literal, which sizes the buffer the columns are written into.
const unnestCellBytes = 24

// args appends the column arrays to args, in the columns' order, as the
// statement's arguments for the parameters sql numbered. The columns are
// written column after column into one buffer (the writer's, see
// paramBuf), and each argument is a slice of it: a commit's statement
// takes dozens of these arguments, and a buffer per column was most of the
// engine's allocations per step. They go as bytes, which lib/pq sends as
// they are (a string it copies into bytes first): as text's binary form
// with binary_parameters, which is the text, hence sql's cast of each
// parameter to text before its array type (bytes taken for the array's
// binary form would be misread).
func (b *unnestBatch[R]) args(args []any) []any {
	if len(b.rows) == 0 {
		for range b.cols {
			args = append(args, nil)
		}
		return args
	}
	a := pgArray{b: b.buf.grab()}
	start := len(a.b)
	a.b = grow(a.b, unnestCellBytes*len(b.cols)*len(b.rows))
	var ends [32]int
	end := ends[:0]
	for i := range b.cols {
		from := len(a.b)
		for _, r := range b.rows {
			b.cols[i].put(&a, r)
		}
		if i > 0 && a.nulls == len(b.rows) {
			a.b, a.n, a.nulls = a.b[:from], 0, 0
			end = append(end, -1) // NULL, see above
			continue
		}
		end = append(end, a.endColumn())
	}
	b.buf.keep(a.b)
	for _, e := range end {
		if e < 0 {
			args = append(args, nil)
			continue
		}
		args = append(args, a.b[start:e:e])
		start = e
	}
	return args
}
