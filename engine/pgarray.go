package engine

import (
	"database/sql"
	"strconv"
	"strings"
	"time"
)

// pgArray builds a PostgreSQL array literal, so a batch of N rows travels as
// one parameter per column (unnest) instead of N×columns parameters: the
// statement text stays fixed and planning stays cheap whatever the batch size.
type pgArray struct {
	b strings.Builder
	n int
	// closed: String wrote the closing brace.
	closed bool
}

func (a *pgArray) sep() {
	if a.n == 0 {
		a.b.WriteByte('{')
	} else {
		a.b.WriteByte(',')
	}
	a.n++
}

func (a *pgArray) null() { a.sep(); a.b.WriteString("NULL") }

func (a *pgArray) str(s string) {
	a.sep()
	a.b.Grow(len(s) + 2)
	a.b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' {
			a.b.WriteByte('\\')
		}
		a.b.WriteByte(s[i])
	}
	a.b.WriteByte('"')
}

// strBytes is str of string(s), without making that string.
func (a *pgArray) strBytes(s []byte) {
	a.sep()
	a.b.Grow(len(s) + 2)
	a.b.WriteByte('"')
	for _, c := range s {
		if c == '"' || c == '\\' {
			a.b.WriteByte('\\')
		}
		a.b.WriteByte(c)
	}
	a.b.WriteByte('"')
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
	a.sep()
	a.b.Grow(2*len(b) + 5)
	a.b.WriteString(`"\\x`)
	const digits = "0123456789abcdef"
	for _, c := range b {
		a.b.WriteByte(digits[c>>4])
		a.b.WriteByte(digits[c&0xf])
	}
	a.b.WriteByte('"')
}

// jsonText writes JSON held in b as a text element (NULL when b is nil).
func (a *pgArray) jsonText(b []byte) {
	if b == nil {
		a.null()
		return
	}
	a.strBytes(b)
}

func (a *pgArray) int(v int64) { a.sep(); a.b.WriteString(strconv.FormatInt(v, 10)) }

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
	var buf [48]byte
	a.b.WriteByte('"')
	a.b.Write(t.Time.UTC().AppendFormat(buf[:0], time.RFC3339Nano))
	a.b.WriteByte('"')
}

func (a *pgArray) String() string {
	if a.n == 0 {
		return "{}"
	}
	if !a.closed {
		a.closed = true
		a.b.WriteByte('}')
	}
	return a.b.String()
}

// endColumn closes the array being written and returns the length of
// everything written so far; the next element starts another array after
// it in the same buffer. A batch's columns are written one after the other
// this way (see unnestBatch.args), so they cost one allocation instead of
// a few each.
func (a *pgArray) endColumn() int {
	if a.n == 0 {
		a.b.WriteByte('{')
	}
	a.b.WriteByte('}')
	a.n = 0
	return a.b.Len()
}
