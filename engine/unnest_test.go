package engine

import (
	"database/sql"
	"encoding/hex"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/internal/devenv"
)

// TestUnnestClauseFollowsItsColumns pins the unnest clause a column list
// renders: each column's placeholder, cast and alias name in the list's
// order, unnested in the select list (in step), numbered from the offset,
// limited to the first column's length.
func TestUnnestClauseFollowsItsColumns(t *testing.T) {
	cols := newUnnest(
		textCol("id", func(r fencedRun) string { return r.runID }),
		intCol("token", func(r fencedRun) int { return r.token }),
	)
	require.Equal(t, `(SELECT unnest($3::text::text[]) AS id, unnest($4::text::int[]) AS token LIMIT cardinality($3::text::text[])) AS v`, cols.sql(2, "v"))
	b := cols.batch(2)
	b.add(fencedRun{`a"b`, 1})
	b.add(fencedRun{"c", 2})
	// Arrays as text in bytes (see args), elements quoted where they must
	// be (see pgarray.Plain).
	require.Equal(t, []any{"x", []byte(`{"a\"b",c}`), []byte("{1,2}")}, b.args([]any{"x"}))
	// As a VALUES list: a parameter per cell, row after row.
	require.Equal(t, `(SELECT * FROM (VALUES ($3::text, $4::int), ($5::text, $6::int)) AS v(id, token) LIMIT (SELECT 2)) AS v`, cols.from(2, "v", 2))
	require.Equal(t, cols.sql(2, "v"), cols.from(2, "v", 0))
	require.Equal(t, 4, cols.params(2))
	require.Equal(t, 2, cols.params(0))
	// Text cells as bytes (see argsAs).
	require.Equal(t, []any{"x", []byte(`a"b`), int64(1), []byte("c"), int64(2)}, b.argsAs([]any{"x"}, 2))
}

// The unnest clause gives back a batch's rows in order, each row's cells
// from the same position of every array (NULL cells too), and no rows for
// a batch without any (its columns sent as NULL).
func TestUnnestClauseReadsBackRows(t *testing.T) {
	t.Parallel()
	db := testDB(t)
	type row struct {
		fencedRun
		owner string
	}
	cols := newUnnest(
		textCol("id", func(r row) string { return r.runID }),
		intCol("token", func(r row) int { return r.token }),
		optTextCol("owner", func(r row) string { return r.owner }),
	)
	q := `SELECT v.id, v.token, v.owner FROM ` + cols.sql(0, "v")
	read := func(args []any) []string {
		rows, err := db.Query(q, args...)
		require.NoError(t, err)
		defer rows.Close()
		var got []string
		for rows.Next() {
			var id string
			var token int
			var owner sql.NullString
			require.NoError(t, rows.Scan(&id, &token, &owner))
			got = append(got, id+"/"+strconv.Itoa(token)+"/"+owner.String+"/"+strconv.FormatBool(owner.Valid))
		}
		require.NoError(t, rows.Err())
		return got
	}
	b := cols.batch(3)
	b.add(row{fencedRun{"c", 3}, "w"})
	b.add(row{fencedRun{"a", 1}, ""})
	b.add(row{fencedRun{"b", 2}, "x"})
	require.Equal(t, []string{"c/3/w/true", "a/1//false", "b/2/x/true"}, read(b.args(nil)))
	none := cols.batch(0)
	require.Empty(t, read(none.args(nil)))
}

// TestValuesCellsSendNull pins the parameters of a VALUES list's cells:
// NULL (nil) where the array element would be NULL, the value otherwise.
func TestValuesCellsSendNull(t *testing.T) {
	now := time.Date(2026, 12, 6, 6, 0, 0, 0, time.UTC)
	st := &stepRow{RunID: "r", Seq: 1, Kind: stepActivity, Name: "n", Status: stepStarted, Input: []byte(`{}`),
		Attempts: 1, StartedAt: nullTime(now), SignalID: sql.NullInt64{Int64: 7, Valid: true}}
	args := stepArgs(nil, nil, []*stepRow{st}, []fence{{"w", 2}}, 1)
	require.Len(t, args, len(stepCols))
	cell := func(name string) any {
		for i, c := range stepCols {
			if c.name == name {
				return args[i]
			}
		}
		panic(name)
	}
	require.Equal(t, []byte("r"), cell("run_id"))
	require.Equal(t, int64(1), cell("seq"))
	require.Equal(t, []byte(`{}`), cell("input"))
	require.Nil(t, cell("output"))
	require.Nil(t, cell("error"))
	require.Equal(t, "2026-12-06T06:00:00Z", cell("started_at")) // as text: TestValuesTimesAreTheInstant
	require.Nil(t, cell("completed_at"))
	require.Equal(t, int64(7), cell("signal_id"))
	require.Nil(t, cell("child_workflow_id"))
	require.Equal(t, []byte("w"), cell("owner"))
	require.Equal(t, int64(2), cell("token"))
	require.Nil(t, cell("attempt_log"))
	fin := &writeOp{runID: "r", owner: "w", token: 2, fin: &finishSpec{status: StatusWaiting, errJSON: []byte(`{"m":1}`)}}
	fargs := finishArgs(nil, nil, []*writeOp{fin}, []int{0}, 1)
	require.Equal(t, []any{[]byte("r"), []byte("w"), []byte("waiting"), nil, `{"m":1}`, nil, int64(0), int64(2), false}, fargs)
}

// TestValuesTimesAreTheInstant pins that a time sent in a VALUES list's
// cell, as RFC 3339 text in UTC (or as a time.Time for a year RFC 3339
// cannot write), is the instant PostgreSQL reads from the time.Time lib/pq
// formats itself, rounded to the microsecond alike: in any zone (one with
// an offset in seconds too), to the nanosecond, at the ends of the years
// RFC 3339 writes and past them.
func TestValuesTimesAreTheInstant(t *testing.T) {
	t.Parallel()
	db := testDB(t)
	lmt := time.FixedZone("LMT", 7*3600+13*60+7)
	west := time.FixedZone("W", -(9*3600 + 30*60))
	times := []time.Time{
		time.Date(2026, 12, 6, 6, 0, 0, 0, time.UTC),
		time.Date(2026, 12, 6, 6, 0, 0, 123456789, time.UTC),
		time.Date(2026, 12, 6, 6, 0, 0, 500, time.UTC),
		time.Date(2026, 12, 6, 6, 0, 0, 1500, time.UTC),
		time.Date(2026, 12, 6, 6, 0, 0, 999999500, time.UTC),
		time.Date(1887, 3, 1, 0, 0, 0, 7, lmt),
		time.Date(2026, 12, 31, 23, 59, 59, 999999999, west),
		time.Now(),
		time.Now().In(west),
		time.Date(1, 1, 1, 0, 0, 0, 1000, time.UTC), // (the zero time is NULL)
		time.Date(9999, 12, 31, 23, 59, 59, 999999, time.UTC),
		time.Date(0, 6, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-44, 3, 15, 12, 0, 0, 0, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(1, 1, 1, 0, 0, 0, 0, lmt), // year 0 in UTC
	}
	for _, at := range times {
		st := &stepRow{RunID: "r", Seq: 1, Kind: stepActivity, Name: "n", Status: stepStarted, StartedAt: nullTime(at)}
		args := stepArgs(nil, nil, []*stepRow{st}, []fence{{"w", 2}}, 1)
		var cell any
		for i, c := range stepCols {
			if c.name == "started_at" {
				cell = args[i]
			}
		}
		if y := at.UTC().Year(); y >= 1 && y <= 9999 {
			require.IsType(t, "", cell, "%v", at)
		} else {
			require.Equal(t, at, cell, "%v", at)
		}
		var same bool
		var sent, want string
		require.NoError(t, db.QueryRow(`SELECT $1::timestamptz = $2::timestamptz, $1::timestamptz::text, $2::timestamptz::text`, cell, at).Scan(&same, &sent, &want))
		require.True(t, same, "%v: sent %s, lib/pq's %s", at, sent, want)
	}
}

// TestValuesTextCellsReadBack pins that a VALUES list's text cells, sent as
// bytes, read back as the strings they were, with and without lib/pq's
// binary_parameters (bytes go as text's binary form with it, as text
// without): quotes, backslashes, non-ASCII, an empty string, NULLs; and
// that an invalid UTF-8 string is refused as it is when sent as a string.
func TestValuesTextCellsReadBack(t *testing.T) {
	t.Parallel()
	type row struct{ a, b string }
	cols := newUnnest(
		textCol("a", func(r row) string { return r.a }),
		optTextCol("b", func(r row) string { return r.b }),
		nullTextCol("c", func(r row) sql.NullString { return sql.NullString{String: r.a + r.b, Valid: r.b != "x"} }),
	)
	q := `SELECT v.a, v.b, v.c FROM ` + cols.from(0, "v", 2)
	for _, binary := range []string{"yes", "no"} {
		db := binaryParametersDB(t, binary)
		read := func(rs ...row) ([]string, error) {
			b := cols.batch(2)
			for _, r := range rs {
				b.add(r)
			}
			rows, err := db.Query(q, b.argsAs(nil, 2)...)
			if err != nil {
				return nil, err
			}
			defer rows.Close()
			var got []string
			for rows.Next() {
				var a string
				var b, c sql.NullString
				require.NoError(t, rows.Scan(&a, &b, &c))
				got = append(got, a+"|"+b.String+"|"+strconv.FormatBool(b.Valid)+"|"+c.String+"|"+strconv.FormatBool(c.Valid))
			}
			return got, rows.Err()
		}
		got, err := read(row{`a"b\c'd`, "é ☃ {x}"}, row{"", "x"})
		require.NoError(t, err, binary)
		require.Equal(t, []string{`a"b\c'd|é ☃ {x}|true|a"b\c'dé ☃ {x}|true`, "|x|true||false"}, got, binary)
		got, err = read(row{"r", ""}, row{"s", ""})
		require.NoError(t, err, binary)
		require.Equal(t, []string{"r||false|r|true", "s||false|s|true"}, got, binary)
		_, err = read(row{"ok", "\xff"}, row{"ok", "y"})
		_, strErr := db.Exec(`SELECT $1::text`, "\xff")
		require.Error(t, strErr, binary)
		require.Error(t, err, binary)
	}
}

// binaryParametersDB opens the test database with lib/pq's
// binary_parameters set to binary ("yes" or "no").
func binaryParametersDB(t *testing.T, binary string) *sql.DB {
	t.Helper()
	u, err := url.Parse(devenv.DatabaseURL())
	require.NoError(t, err)
	vals := u.Query()
	vals.Set("binary_parameters", binary)
	u.RawQuery = vals.Encode()
	db, err := sql.Open("postgres", u.String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// TestArrayParametersReadBack pins that a batch's columns, sent as array
// literals in bytes (see unnestBatch.args), read back as the values they
// were made from, with and without lib/pq's binary_parameters (bytes go as
// text's binary form with it, as text without; sql casts each to text
// before its array type): text with quotes, backslashes, commas, braces,
// spaces, the word NULL, non-ASCII and empty strings; NULLs of every kind;
// integers at their ends; bytes and JSON with the same characters; times.
// Statement after statement built in one writer's paramBuf, arrays and a
// VALUES list in one statement, the later ones read back their own values,
// and a batch far past paramBufKeep leaves no buffer behind.
func TestArrayParametersReadBack(t *testing.T) {
	t.Parallel()
	type row struct {
		s, opt string
		null   sql.NullString
		i      int
		big    int64
		ni     sql.NullInt64
		b, j   []byte
		ok     bool
		at     sql.NullTime
	}
	cols := newUnnest(
		textCol("s", func(r row) string { return r.s }),
		optTextCol("opt", func(r row) string { return r.opt }),
		nullTextCol("maybe", func(r row) sql.NullString { return r.null }),
		intCol("i", func(r row) int { return r.i }),
		bigintCol("big", func(r row) int64 { return r.big }),
		nullIntCol("ni", func(r row) sql.NullInt64 { return r.ni }),
		byteaCol("b", func(r row) []byte { return r.b }),
		jsonbCol("j", func(r row) []byte { return r.j }),
		boolCol("ok", func(r row) bool { return r.ok }),
		timeCol("at", func(r row) sql.NullTime { return r.at }),
	)
	odd := []string{`a"b`, `back\slash\`, `c,o,m,m,a`, `{br}aces{`, "NULL", "nuLL", "é 雪 ☃", " spaced out ", "tab\tnew\nline", "", `\"`, "'", `"{,}"`, "plain-Text_1"}
	at := time.Date(2026, 12, 7, 4, 30, 0, 123456000, time.FixedZone("x", 3600))
	rowsOf := func(n, shift int) []row {
		var rs []row
		for k := range n {
			s := odd[(k+shift)%len(odd)]
			r := row{s: s, opt: s, null: sql.NullString{String: s, Valid: k%3 != 1}, i: k - shift, big: int64(k) << 40,
				b: []byte(s), j: []byte(`{"k": ` + strconv.Quote(s) + `}`), ok: k%2 == 0, at: nullTime(at.Add(time.Duration(k) * time.Hour))}
			switch k % 4 {
			case 1:
				r.i, r.big, r.ni = math.MaxInt32, math.MinInt64, sql.NullInt64{Int64: math.MaxInt32, Valid: true}
				r.b, r.j, r.at = nil, nil, sql.NullTime{}
			case 2:
				r.i, r.big, r.ni = math.MinInt32, math.MaxInt64, sql.NullInt64{Int64: -1, Valid: true}
				r.b = []byte{0, 1, '"', '\\', ',', '{', 0xfe, 0xff}
			}
			rs = append(rs, r)
		}
		return rs
	}
	// A row as text, each cell as PostgreSQL gives it back or as the row
	// says it should be.
	want := func(r row) string {
		opt := sql.NullString{String: r.opt, Valid: r.opt != ""}
		j := sql.NullString{String: string(r.j), Valid: r.j != nil}
		if !r.null.Valid {
			r.null.String = ""
		}
		return fmt.Sprint(r.s, "|", opt, "|", r.null, "|", r.i, "|", r.big, "|", r.ni, "|", r.b == nil, hex.EncodeToString(r.b), "|", j, "|", r.ok, "|", r.at.Valid, r.at.Time.UnixMicro())
	}
	scan := func(rows *sql.Rows) []string {
		defer rows.Close()
		var got []string
		for rows.Next() {
			var r row
			var opt, j sql.NullString
			var at sql.NullTime
			require.NoError(t, rows.Scan(&r.s, &opt, &r.null, &r.i, &r.big, &r.ni, &r.b, &j, &r.ok, &at))
			got = append(got, fmt.Sprint(r.s, "|", opt, "|", r.null, "|", r.i, "|", r.big, "|", r.ni, "|", r.b == nil, hex.EncodeToString(r.b), "|", j, "|", r.ok, "|", at.Valid, at.Time.UnixMicro()))
		}
		require.NoError(t, rows.Err())
		return got
	}
	wants := func(rs ...[]row) []string {
		var w []string
		for _, part := range rs {
			for _, r := range part {
				w = append(w, want(r))
			}
		}
		return w
	}
	const list = `v.s, v.opt, v.maybe, v.i, v.big, v.ni, v.b, v.j::text, v.ok, v.at`
	arrays := `SELECT ` + list + ` FROM ` + cols.sql(0, "v")
	mixed := arrays + ` UNION ALL SELECT ` + list + ` FROM ` + cols.from(len(cols), "v", 2)
	for _, binary := range []string{"yes", "no"} {
		db := binaryParametersDB(t, binary)
		var p paramBuf
		send := func(q string, batches ...[]row) []string {
			args := p.start(0)
			for k, rs := range batches {
				b := cols.batchIn(&p, len(rs))
				for _, r := range rs {
					b.add(r)
				}
				args = b.argsAs(args, min(k, 2))
			}
			rows, err := db.Query(q, args...)
			p.sent(args)
			require.NoError(t, err, binary)
			return scan(rows)
		}
		first, second, pair := rowsOf(len(odd), 0), rowsOf(5, 3), rowsOf(2, 7)
		require.Equal(t, wants(first), send(arrays, first), binary)
		require.Equal(t, wants(second), send(arrays, second), binary)
		// Columns NULL in every row (sent as NULL, see args).
		nulls := []row{{s: "x", i: 1}, {s: "y", i: 2}, {s: "z", i: 3}}
		b := cols.batch(len(nulls))
		for _, r := range nulls {
			b.add(r)
		}
		args := b.args(nil)
		require.NotNil(t, args[0])
		require.Nil(t, args[1])
		require.Equal(t, wants(nulls), send(arrays, nulls), binary)
		require.Equal(t, wants(second, pair), send(mixed, second, pair), binary)
		// Without a writer's memory, the same.
		b = cols.batch(len(first))
		for _, r := range first {
			b.add(r)
		}
		rows, err := db.Query(arrays, b.args(nil)...)
		require.NoError(t, err, binary)
		require.Equal(t, wants(first), scan(rows), binary)
		// An exceptional batch: read back, and its buffer not kept.
		huge := rowsOf(2*paramBufKeep/(unnestCellBytes*len(cols)), 1)
		require.Equal(t, wants(huge), send(arrays, huge), binary)
		require.Nil(t, p.b, binary)
		require.Equal(t, wants(first), send(arrays, first), binary)
		require.NotNil(t, p.b, binary)
	}
}

// TestHotStatementsNumberTheirParameters checks that the statements built
// from several column lists use exactly the parameters their callers send.
func TestHotStatementsNumberTheirParameters(t *testing.T) {
	s := newStore(nil, "graft")
	maxParam := func(q string) int {
		n := 0
		for _, m := range regexp.MustCompile(`\$(\d+)`).FindAllStringSubmatch(q, -1) {
			v, _ := strconv.Atoi(m[1])
			n = max(n, v)
		}
		return n
	}
	for name, c := range map[string]struct {
		q string
		n int
	}{
		"finishRuns":          {s.sql.finishRuns, finishParams},
		"insertRuns":          {s.sql.insertRuns, runParams},
		"insertAnnouncedRuns": {s.sql.insertAnnouncedRuns, runParams + 1},
		"insertSteps":         {s.sql.insertSteps, stepParams},
	} {
		require.Equal(t, c.n, maxParam(c.q), name)
	}
	for name, sh := range commitShapes() {
		c := s.sql.commit[sh]
		require.Equal(t, c.params, maxParam(c.q), name)
		for _, rows := range []uint8{1, valuesRows} {
			c := s.commitFor(commitKey{sh: sh, steps: rows, fins: rows, news: rows, newSteps: rows})
			require.Equal(t, c.params, maxParam(c.q), "%s, %d rows", name, rows)
		}
	}
}
