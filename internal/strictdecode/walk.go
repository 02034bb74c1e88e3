package strictdecode

import (
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// walk finds the first mistake in a document the decoder refused by going
// through its tree beside v's type: a key the type does not have, a value of
// the wrong shape or type. It names it by the document's path, line and
// column, which neither decoder says (yaml.v3 gives a line and a Go type,
// encoding/json Go struct names and no position). tag is the struct tag the
// document's keys are read from ("yaml" or "json"). It returns nil when it
// finds nothing (a type it does not follow), so the decoder's own error is
// kept.
func walk(root *yaml.Node, v any, tag string) *Error {
	t := reflect.TypeOf(v)
	if t == nil || t.Kind() != reflect.Pointer {
		return nil
	}
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	return (&walker{tag: tag}).value(n, t.Elem(), "")
}

type walker struct{ tag string }

var (
	yamlUnmarshaler = reflect.TypeFor[yaml.Unmarshaler]()
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

func (w *walker) fail(n *yaml.Node, path, format string, args ...any) *Error {
	return &Error{Path: path, Line: n.Line, Column: n.Column, Msg: fmt.Sprintf(format, args...)}
}

func (w *walker) value(n *yaml.Node, t reflect.Type, path string) *Error {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	pt := reflect.PointerTo(t)
	if t.Implements(yamlUnmarshaler) || pt.Implements(yamlUnmarshaler) || t.Implements(jsonUnmarshaler) ||
		pt.Implements(jsonUnmarshaler) || pt.Implements(textUnmarshaler) {
		return nil // its own decoding: the decoder's message stands
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil // the zero value
	}
	switch t.Kind() {
	case reflect.Pointer:
		return w.value(n, t.Elem(), path)
	case reflect.Interface:
		return nil
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return w.wrong(n, t, path)
		}
		return w.structFields(n, t, path)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return w.wrong(n, t, path)
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if e := w.value(k, t.Key(), path); e != nil {
				e.Msg = "key " + strconv.Quote(k.Value) + ": " + e.Msg
				return e
			}
			if e := w.value(val, t.Elem(), Join(path, k.Value)); e != nil {
				return e
			}
		}
		return nil
	case reflect.Slice, reflect.Array:
		if n.Kind != yaml.SequenceNode {
			return w.wrong(n, t, path)
		}
		if t.Kind() == reflect.Array && len(n.Content) > t.Len() {
			return w.fail(n, path, "want at most %d items, got %d", t.Len(), len(n.Content))
		}
		for i, item := range n.Content {
			if e := w.value(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); e != nil {
				return e
			}
		}
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		return w.wrong(n, t, path)
	}
	return w.scalar(n, t, path)
}

// structFields checks a mapping against struct t's fields.
func (w *walker) structFields(n *yaml.Node, t reflect.Type, path string) *Error {
	fields := map[string]reflect.StructField{}
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get(w.tag), ",")
		if f.Anonymous || strings.Contains(opts, "inline") {
			return nil // promoted fields: not followed
		}
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
			if w.tag == "yaml" {
				name = strings.ToLower(name)
			}
		}
		fields[name] = f
		names = append(names, name)
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		f, ok := fields[k.Value]
		if !ok && w.tag == "json" { // encoding/json matches keys without case
			for name, g := range fields {
				if strings.EqualFold(name, k.Value) {
					f, ok = g, true
					break
				}
			}
		}
		if !ok {
			slices.Sort(names)
			return w.fail(k, Join(path, k.Value), "unknown field %q (known here: %s)", k.Value, strings.Join(names, ", "))
		}
		if e := w.value(val, f.Type, Join(path, k.Value)); e != nil {
			return e
		}
	}
	return nil
}

// scalar checks a scalar against a basic type: as YAML decodes it, or as
// encoding/json decodes the JSON literal it was.
func (w *walker) scalar(n *yaml.Node, t reflect.Type, path string) *Error {
	var err error
	if w.tag == "json" {
		lit := []byte(n.Value)
		if n.Tag == "!!str" {
			lit, _ = json.Marshal(n.Value)
		}
		err = json.Unmarshal(lit, reflect.New(t).Interface())
	} else {
		err = n.Decode(reflect.New(t).Interface())
	}
	if err == nil {
		return nil
	}
	if isInt(t.Kind()) && n.Tag != "!!str" && integer.MatchString(n.Value) {
		return w.fail(n, path, "%s is out of range for %s", n.Value, kindName(t, w.tag))
	}
	return w.wrong(n, t, path)
}

func (w *walker) wrong(n *yaml.Node, t reflect.Type, path string) *Error {
	var got string
	switch n.Kind {
	case yaml.MappingNode:
		got = "a mapping"
		if w.tag == "json" {
			got = "an object"
		}
	case yaml.SequenceNode:
		got = "a list"
		if w.tag == "json" {
			got = "an array"
		}
	default:
		got = n.Value
		if n.Tag == "!!str" {
			got = strconv.Quote(n.Value)
		}
	}
	return w.fail(n, path, "want %s, got %s", kindName(t, w.tag), got)
}

func isInt(k reflect.Kind) bool {
	return k >= reflect.Int && k <= reflect.Uint64
}

// kindName says what a value of type t is written as.
func kindName(t reflect.Type, tag string) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	k := t.Kind()
	switch {
	case k == reflect.String:
		return "a string"
	case k == reflect.Bool:
		return "true or false"
	case k >= reflect.Int && k <= reflect.Int64:
		return "an integer"
	case isInt(k):
		return "a non-negative integer"
	case k == reflect.Float32 || k == reflect.Float64:
		return "a number"
	case (k == reflect.Slice || k == reflect.Array) && tag == "json":
		return "an array"
	case k == reflect.Slice || k == reflect.Array:
		return "a list"
	case (k == reflect.Map || k == reflect.Struct) && tag == "json":
		return "an object"
	case k == reflect.Map || k == reflect.Struct:
		return "a mapping (key: value)"
	}
	return t.String()
}

var integer = regexp.MustCompile(`^[-+]?[0-9]+$`)

var plainKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*$`)

// Join appends a key (a field, or a map's key) to a path as a document's
// errors name it: a.b, or a["b c"] for a key that is not a plain word.
func Join(path, key string) string {
	if !plainKey.MatchString(key) {
		return path + "[" + strconv.Quote(key) + "]"
	}
	if path == "" {
		return key
	}
	return path + "." + key
}
