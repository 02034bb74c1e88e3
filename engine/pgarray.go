package engine

import (
	"database/sql"
	"slices"
	"strconv"
	"time"

	"github.com/graftdev/graft/internal/pgarray"
)

// pgArray builds a PostgreSQL array literal, so a batch of N rows travels as
// one parameter per column (unnest) instead of N×columns parameters: the
// statement text stays fixed and planning stays cheap whatever the batch size.
type pgArray struct {
	b []byte
	n int
	// nulls counts the NULL elements of the array being written.
	nulls int
	// closed: String wrote the closing brace.
	closed bool
}

func (a *pgArray) sep() {
	if a.n == 0 {
		a.b = append(a.b, '{')
	} else {
		a.b = append(a.b, ',')
	}
	a.n++
}

func (a *pgArray) null() { a.sep(); a.nulls++; a.b = append(a.b, "NULL"...) }

func (a *pgArray) str(s string) { quoteElem(a, s) }

// strBytes is str of string(s), without making that string.
func (a *pgArray) strBytes(s []byte) { quoteElem(a, s) }

// quoteElem writes s as an element (pgarray.AppendElem): unquoted when
// PostgreSQL reads it so, else quoted. The quotes of the identifiers,
// names and statuses that make up most of a commit's arrays were a tenth
// of its parameters' bytes.
func quoteElem[S string | []byte](a *pgArray, s S) {
	a.sep()
	a.b = pgarray.AppendElem(a.b, s)
}

func (a *pgArray) nullStr(s sql.NullString) {
	if !s.Valid {
		a.null()
		return
	}
	a.str(s.String)
}

// optStr writes NULL for the empty string.
func (a *pgArray) optStr(s string) { a.nullStr(nullString(s)) }

func (a *pgArray) bytes(b []byte) {
	if b == nil {
		a.null()
		return
	}
	// Unquoted (pgarray.Plain): the backslash escaped.
	a.sep()
	a.b = append(slices.Grow(a.b, 2*len(b)+3), `\\x`...)
	const digits = "0123456789abcdef"
	for _, c := range b {
		a.b = append(a.b, digits[c>>4], digits[c&0xf])
	}
}

// jsonText writes JSON held in b as a text element (NULL when b is nil).
func (a *pgArray) jsonText(b []byte) {
	if b == nil {
		a.null()
		return
	}
	a.strBytes(b)
}

func (a *pgArray) int(v int64) { a.sep(); a.b = strconv.AppendInt(a.b, v, 10) }

func (a *pgArray) nullInt(v sql.NullInt64) {
	if !v.Valid {
		a.null()
		return
	}
	a.int(v.Int64)
}

func (a *pgArray) time(t sql.NullTime) {
	if !t.Valid {
		a.null()
		return
	}
	a.sep()
	a.b = t.Time.UTC().AppendFormat(a.b, time.RFC3339Nano) // (plain: pgarray.Plain)
}

func (a *pgArray) String() string {
	if a.n == 0 {
		return "{}"
	}
	if !a.closed {
		a.closed = true
		a.b = append(a.b, '}')
	}
	return string(a.b)
}

// endColumn closes the array being written and returns the length of
// everything written so far; the next element starts another array after
// it in the same buffer. A batch's columns are written one after the other
// this way (see unnestBatch.args), so they cost one allocation instead of
// a few each.
func (a *pgArray) endColumn() int {
	if a.n == 0 {
		a.b = append(a.b, '{')
	}
	a.b = append(a.b, '}')
	a.n, a.nulls = 0, 0
	return len(a.b)
}
