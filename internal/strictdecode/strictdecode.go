// Package strictdecode reads declarations (a sync mapping, a tasks source,
// graft server's configuration) from YAML or JSON, refusing unknown fields so
// that a misspelt key is an error rather than ignored. Its errors name what
// is wrong as the document spells it: the path of keys and list indexes
// (intake.flags[2].percent), not a Go struct's field, with a line and
// column. It imports nothing of graft.
package strictdecode

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"
)

// Error is a declaration's mistake: where it is and what is wrong.
type Error struct {
	// Path is the value's path as the document spells it, keys joined by
	// dots and list items by their index ("intake.flags[2].percent"); ""
	// for the document itself.
	Path string
	// Line and Column are 1-based; 0 when unknown.
	Line, Column int
	// Msg says what is wrong ("want an integer, got \"lots\"").
	Msg string
}

func (e *Error) Error() string {
	where := e.Path
	if e.Line > 0 {
		pos := fmt.Sprintf("line %d", e.Line)
		if e.Column > 0 {
			pos += fmt.Sprintf(", column %d", e.Column)
		}
		if where == "" {
			where = pos
		} else {
			where += " (" + pos + ")"
		}
	}
	if where == "" {
		return e.Msg
	}
	return where + ": " + e.Msg
}

// YAML decodes one YAML document in b into v (a pointer).
func YAML(b []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return &Error{Msg: "no YAML document (the input is empty or only comments)"}
		}
		return err // a syntax error, which names its line
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		if err != nil {
			return err
		}
		return &Error{Line: next.Line, Column: next.Column, Msg: "a second YAML document (---); a declaration is one document"}
	}
	strict := yaml.NewDecoder(bytes.NewReader(b))
	strict.KnownFields(true)
	if err := strict.Decode(v); err != nil {
		if e := walk(&root, v, "yaml"); e != nil {
			return e
		}
		return err
	}
	return nil
}

// JSON decodes one JSON value in b into v (a pointer).
func JSON(b []byte, v any) error {
	if len(bytes.TrimSpace(b)) == 0 {
		return &Error{Msg: "no JSON value (the input is empty)"}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var syntax *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syntax):
			line, col := position(b, syntax.Offset-1) // Offset is after the byte it refused
			return &Error{Line: line, Column: col, Msg: "invalid JSON: " + syntax.Error()}
		case errors.Is(err, io.ErrUnexpectedEOF):
			line, col := position(b, int64(len(b)))
			return &Error{Line: line, Column: col, Msg: "invalid JSON: the input ends inside a value"}
		}
		// JSON is YAML (for what a declaration holds), and the YAML tree
		// knows each value's position.
		var root yaml.Node
		if yaml.Unmarshal(b, &root) == nil {
			if e := walk(&root, v, "json"); e != nil {
				return e
			}
		}
		if errors.As(err, &typ) {
			line, col := position(b, typ.Offset)
			return &Error{Path: typ.Field, Line: line, Column: col, Msg: fmt.Sprintf("want %s, got a JSON %s", kindName(typ.Type, "json"), typ.Value)}
		}
		return err
	}
	if off := dec.InputOffset(); len(bytes.TrimSpace(b[off:])) > 0 {
		line, col := position(b, off+int64(len(b[off:])-len(bytes.TrimLeft(b[off:], " \t\r\n"))))
		return &Error{Line: line, Column: col, Msg: "more after the JSON value; a declaration is one value"}
	}
	return nil
}

// position turns a byte offset into b into a 1-based line and column (in
// characters).
func position(b []byte, off int64) (line, col int) {
	off = min(max(off, 0), int64(len(b)))
	before := b[:off]
	line = bytes.Count(before, []byte("\n")) + 1
	col = len([]rune(string(before[bytes.LastIndexByte(before, '\n')+1:]))) + 1
	return line, col
}

// ReadFile reads path; isJSON reports whether its extension is .json (any
// other file is YAML).
func ReadFile(path string) (b []byte, isJSON bool, err error) {
	b, err = os.ReadFile(path)
	return b, strings.EqualFold(filepath.Ext(path), ".json"), err
}
