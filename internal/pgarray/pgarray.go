// Package pgarray holds what the packages that write PostgreSQL array
// literals (engine's batches, sync's mirror) share of array input's rules.
// It imports nothing of graft.
package pgarray

import (
	"slices"
	"strings"
)

// Plain reports whether s, as an element of an array literal, reads back
// as itself unquoted: it is not empty, does not read as NULL (in any case),
// and has none of the characters the literal's syntax gives a meaning
// (quotes, backslashes, braces, the comma) nor white space, which
// PostgreSQL trims around an unquoted element.
func Plain[S string | []byte](s S) bool {
	if len(s) == 0 || len(s) == 4 && strings.EqualFold(string(s), "NULL") {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"', '\\', '{', '}', ',', ' ', '\t', '\n', '\r', '\v', '\f':
			return false
		}
	}
	return true
}

// AppendElem appends s to b as an array element: as it is when it is
// Plain, else in double quotes with its quotes and backslashes escaped.
func AppendElem[S string | []byte](b []byte, s S) []byte {
	if Plain(s) {
		return append(b, s...)
	}
	b = append(slices.Grow(b, len(s)+2), '"')
	from := 0
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' {
			b = append(append(b, s[from:i]...), '\\')
			from = i
		}
	}
	return append(append(b, s[from:]...), '"')
}
