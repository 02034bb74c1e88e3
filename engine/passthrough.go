package engine

import (
	"encoding"
	"encoding/json"
	"reflect"
	"strings"
	"sync"
	"unicode/utf8"
)

// An activity's input and result are recorded as JSON, and the activity
// and the workflow see them as a replay would: decoded from that JSON. For
// a value that a JSON round trip gives back unchanged (liveValue) the
// decoding is skipped and the value itself handed on: at one workflow at a
// time the decoding was about a tenth of the engine's CPU per workflow.

// jsonShape is what liveValue knows of a type: whether a JSON round trip
// of its values is the identity, and whether that needs a look at the
// value (its strings must be valid UTF-8, which encoding replaces).
type jsonShape struct{ same, strings bool }

var jsonShapes sync.Map // reflect.Type -> jsonShape

var (
	jsonMarshaler   = reflect.TypeFor[json.Marshaler]()
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textMarshaler   = reflect.TypeFor[encoding.TextMarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// liveValue returns v as a T when T's values survive a JSON round trip
// unchanged (so decoding v's encoding would give v back), and false
// otherwise: the caller then decodes. Only value types qualify (booleans,
// numbers, strings, and arrays and structs of them with plain exported
// fields and no custom encoding), so the value shares no memory with the
// one it came from.
func liveValue[T any](v any) (T, bool) {
	t, ok := v.(T)
	if !ok {
		return t, false
	}
	sh := shapeOf(reflect.TypeFor[T]())
	if !sh.same || (sh.strings && !validStrings(reflect.ValueOf(&t).Elem())) {
		return t, false
	}
	return t, true
}

func shapeOf(t reflect.Type) jsonShape {
	if sh, ok := jsonShapes.Load(t); ok {
		return sh.(jsonShape)
	}
	sh := computeShape(t)
	jsonShapes.Store(t, sh)
	return sh
}

func computeShape(t reflect.Type) jsonShape {
	if t == nil {
		return jsonShape{}
	}
	for _, i := range []reflect.Type{jsonMarshaler, jsonUnmarshaler, textMarshaler, textUnmarshaler} {
		if t.Implements(i) || reflect.PointerTo(t).Implements(i) {
			return jsonShape{}
		}
	}
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return jsonShape{same: true}
	case reflect.String:
		return jsonShape{same: true, strings: true}
	case reflect.Array:
		return computeShape(t.Elem())
	case reflect.Struct:
		out := jsonShape{same: true}
		var names []string
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() || f.Anonymous {
				return jsonShape{}
			}
			name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" && opts == "" || strings.Contains(opts, "string") {
				return jsonShape{}
			}
			if name == "" {
				name = f.Name
			}
			for _, n := range names {
				if strings.EqualFold(n, name) {
					return jsonShape{} // one of them is dropped or decoded into the other
				}
			}
			names = append(names, name)
			sh := computeShape(f.Type)
			if !sh.same {
				return jsonShape{}
			}
			out.strings = out.strings || sh.strings
		}
		return out
	}
	return jsonShape{}
}

// validStrings reports whether every string in v is valid UTF-8.
func validStrings(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.String:
		return utf8.ValidString(v.String())
	case reflect.Array:
		for i := range v.Len() {
			if !validStrings(v.Index(i)) {
				return false
			}
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if !validStrings(v.Field(i)) {
				return false
			}
		}
	}
	return true
}
