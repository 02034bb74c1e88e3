// Package typeschema describes a Go type's JSON as a JSON Schema, for the
// payloads of declared signals: a person or a form builds a payload from
// it, and a process that does not hold the type (graft server, which
// registers none of the workflows) checks a payload against it as the
// workers published it (engine/signal_publish.go). It imports nothing of
// graft.
//
// The schema is as strict as the engine's strict decode where JSON Schema
// can say it: an object's unknown fields are refused (additionalProperties
// false), an integer is an integer within its Go type's range (below 64
// bits; an unsigned one not negative), a time is an RFC 3339 date-time, a
// []byte is a base64 string, and null is accepted where the Go value takes
// it with a meaning of its own (a pointer or an interface; at the top, an
// empty struct too; see Carries). It is stricter in places, on purpose,
// refusing what json.Unmarshal takes without an error but not as the type
// writes it: null for a field that is not a pointer (left at its zero
// value), property names in another case, a []byte as an array of
// numbers, an array longer than a Go array's length (the rest dropped). A
// type with its own UnmarshalJSON is described as any JSON value ({}), one
// with UnmarshalText as a string.
//
// A type whose JSON is one of a few strings says so by listing them (Enum):
// it is described as {"type": "string", "enum": [...]}, whatever else it
// implements, so a payload with another value is refused where the schema
// is checked. The type should refuse another value when decoded too
// (UnmarshalText), for the processes that decode into it.
package typeschema

import (
	"encoding"
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"time"
)

// Enum is a type whose JSON is a string among those Enum returns, as
//
//	func (Action) Enum() []string { return []string{"retry", "resolve"} }
//
// Enum is called on the type's zero value (or a pointer to it, when the
// method has a pointer receiver) and returns the same values every time.
type Enum interface {
	Enum() []string
}

// Of describes the JSON of a value of t, nil for a nil type. The top level
// takes null exactly when Carries(t) is "".
func Of(t reflect.Type) map[string]any {
	if t == nil {
		return nil
	}
	s := schemaOf(t, 0)
	if Carries(t) == "" {
		s = nullable(s)
	}
	return s
}

// Carries says what JSON a value of t is written as ("a JSON object"), or
// "" when null means something of its own for t (a pointer, an interface,
// a struct without fields): a payload of null is refused when it is not "",
// as it would leave the value at its zero without saying so.
func Carries(t reflect.Type) string {
	if t == nil {
		return ""
	}
	if enumOf(t) != nil {
		return "a JSON string"
	}
	switch t.Kind() {
	case reflect.Pointer, reflect.Interface:
		return ""
	case reflect.Struct:
		if t.NumField() == 0 {
			return ""
		}
		return "a JSON object"
	case reflect.Map:
		return "a JSON object"
	case reflect.Slice, reflect.Array:
		return "a JSON array"
	case reflect.String:
		return "a JSON string"
	case reflect.Bool:
		return "true or false"
	default:
		return "a JSON number"
	}
}

var (
	unmarshalerType     = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
	enumType            = reflect.TypeFor[Enum]()
)

// enumOf is the values t lists (Enum), nil when it lists none.
func enumOf(t reflect.Type) []any {
	var e Enum
	switch {
	case t.Kind() == reflect.Pointer || t.Kind() == reflect.Interface:
		return nil
	case t.Implements(enumType):
		e, _ = reflect.Zero(t).Interface().(Enum)
	case reflect.PointerTo(t).Implements(enumType):
		e, _ = reflect.New(t).Interface().(Enum)
	}
	if e == nil {
		return nil
	}
	values := e.Enum()
	if len(values) == 0 {
		return nil
	}
	out := make([]any, len(values))
	for i, v := range values {
		out[i] = v
	}
	return out
}

// nullable makes s take null as well.
func nullable(s map[string]any) map[string]any {
	switch typ := s["type"].(type) {
	case nil: // any value, null included
	case string:
		s["type"] = []any{typ, "null"}
		if e, ok := s["enum"].([]any); ok {
			s["enum"] = append(e, nil)
		}
	}
	return s
}

func schemaOf(t reflect.Type, depth int) map[string]any {
	if t.Kind() == reflect.Pointer {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		return nullable(schemaOf(t, depth))
	}
	if depth > 8 {
		return map[string]any{}
	}
	if e := enumOf(t); e != nil {
		return map[string]any{"type": "string", "enum": e}
	}
	switch {
	case t == reflect.TypeFor[time.Time]():
		return map[string]any{"type": "string", "format": "date-time"}
	case t == reflect.TypeFor[json.RawMessage]():
		return map[string]any{}
	case t.Implements(unmarshalerType) || reflect.PointerTo(t).Implements(unmarshalerType):
		return map[string]any{}
	case t.Implements(textUnmarshalerType) || reflect.PointerTo(t).Implements(textUnmarshalerType):
		return map[string]any{"type": "string"}
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8:
		return map[string]any{"type": "string", "contentEncoding": "base64"}
	}
	switch t.Kind() {
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		s := map[string]any{"type": "integer"}
		if bits := t.Bits(); bits < 64 {
			s["minimum"], s["maximum"] = int64(-1)<<(bits-1), int64(math.MaxInt64>>(64-bits))
		}
		return s
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		s := map[string]any{"type": "integer", "minimum": 0}
		if bits := t.Bits(); bits < 64 {
			s["maximum"] = uint64(math.MaxUint64 >> (64 - bits))
		}
		return s
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.Interface:
		return map[string]any{}
	case reflect.Slice:
		return map[string]any{"type": "array", "items": schemaOf(t.Elem(), depth+1)}
	case reflect.Array:
		return map[string]any{"type": "array", "items": schemaOf(t.Elem(), depth+1), "maxItems": t.Len()}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": schemaOf(t.Elem(), depth+1)}
	case reflect.Struct:
		props := map[string]any{}
		fields(t, depth, props)
		return map[string]any{"type": "object", "properties": props, "additionalProperties": false}
	}
	return map[string]any{}
}

// fields adds the JSON properties of struct t's fields to props, those of
// an embedded struct without a JSON name as its own (json.Marshal flattens
// them); an outer field wins over an embedded one of the same name.
func fields(t reflect.Type, depth int, props map[string]any) {
	var embedded []reflect.Type
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := ""
		if tag, ok := f.Tag.Lookup("json"); ok {
			n, _, _ := strings.Cut(tag, ",")
			if n == "-" {
				continue
			}
			name = n
		}
		if f.Anonymous && name == "" {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				embedded = append(embedded, ft)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		props[name] = schemaOf(f.Type, depth+1)
	}
	for _, et := range embedded {
		inner := map[string]any{}
		if depth < 8 {
			fields(et, depth+1, inner)
		}
		for k, v := range inner {
			if _, ok := props[k]; !ok {
				props[k] = v
			}
		}
	}
}
