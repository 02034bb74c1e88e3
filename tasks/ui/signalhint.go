package ui

import (
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/graftdev/graft/tasks/api"
)

// The signal form says what each signal's payload must look like, from
// the JSON Schema the API lists with it (internal/typeschema, or as its
// workers published it): a compact shape such as
// {"approved"?: boolean, "note"?: string | null}, where "?" marks a field
// that may be left out (one the schema does not require) and "| null" a
// value that takes null. And it offers a template payload, every field at
// a plain value, which the operator edits before sending; the server
// checks the payload on submit as before.

// schemaShape is the compact rendering of a signal's payload schema; "" for
// a signal without a payload.
func schemaShape(s *map[string]any) string {
	if s == nil {
		return ""
	}
	var b strings.Builder
	writeShape(&b, *s, 0)
	return b.String()
}

// schemaTypes are the types a schema names, in its order.
func schemaTypes(s map[string]any) []string {
	switch t := s["type"].(type) {
	case string:
		return []string{t}
	case []any:
		var out []string
		for _, x := range t {
			if str, ok := x.(string); ok {
				out = append(out, str)
			}
		}
		return out
	case []string:
		return t
	}
	return nil
}

func writeShape(b *strings.Builder, s map[string]any, depth int) {
	if e, ok := s["enum"].([]any); ok && len(e) > 0 {
		for i, v := range e {
			if i > 0 {
				b.WriteString(" | ")
			}
			j, _ := json.Marshal(v)
			b.Write(j)
		}
		return
	}
	types := schemaTypes(s)
	if len(types) == 0 {
		b.WriteString("any JSON")
		return
	}
	for i, t := range types {
		if i > 0 {
			b.WriteString(" | ")
		}
		if depth > 6 && (t == "object" || t == "array") {
			b.WriteString(t)
			continue
		}
		switch t {
		case "object":
			writeObject(b, s, depth)
		case "array":
			b.WriteString("[")
			if items, ok := s["items"].(map[string]any); ok {
				writeShape(b, items, depth+1)
			} else {
				b.WriteString("any JSON")
			}
			b.WriteString(", ...]")
		case "string":
			b.WriteString("string")
			if f, ok := s["format"].(string); ok {
				b.WriteString(" (" + f + ")")
			} else if e, ok := s["contentEncoding"].(string); ok {
				b.WriteString(" (" + e + ")")
			}
		default:
			b.WriteString(t)
		}
	}
}

func writeObject(b *strings.Builder, s map[string]any, depth int) {
	props, _ := s["properties"].(map[string]any)
	if len(props) == 0 {
		if extra, ok := s["additionalProperties"].(map[string]any); ok {
			b.WriteString("{string: ")
			writeShape(b, extra, depth+1)
			b.WriteString(", ...}")
			return
		}
		if s["additionalProperties"] == false {
			b.WriteString("{}")
			return
		}
		b.WriteString("object")
		return
	}
	required := map[string]bool{}
	if r, ok := s["required"].([]any); ok {
		for _, x := range r {
			if name, ok := x.(string); ok {
				required[name] = true
			}
		}
	}
	names := make([]string, 0, len(props))
	for k := range props {
		names = append(names, k)
	}
	slices.Sort(names)
	b.WriteString("{")
	for i, name := range names {
		if i > 0 {
			b.WriteString(", ")
		}
		j, _ := json.Marshal(name)
		b.Write(j)
		if !required[name] {
			b.WriteString("?")
		}
		b.WriteString(": ")
		if p, ok := props[name].(map[string]any); ok {
			writeShape(b, p, depth+1)
		} else {
			b.WriteString("any JSON")
		}
	}
	b.WriteString("}")
}

// schemaTemplate is a payload of the schema's shape for the operator to
// edit: every field present at a plain value (false, 0, "", now for a
// date-time, an empty array or map, null for any value); "" for a signal
// without a payload.
func schemaTemplate(s *map[string]any) string {
	if s == nil {
		return ""
	}
	j, err := json.Marshal(sampleOf(*s, 0))
	if err != nil {
		return ""
	}
	return string(j)
}

func sampleOf(s map[string]any, depth int) any {
	if e, ok := s["enum"].([]any); ok && len(e) > 0 {
		return e[0]
	}
	for _, t := range schemaTypes(s) {
		switch t {
		case "object":
			props, _ := s["properties"].(map[string]any)
			out := map[string]any{}
			if depth < 6 {
				for k, v := range props {
					if p, ok := v.(map[string]any); ok {
						out[k] = sampleOf(p, depth+1)
					} else {
						out[k] = nil
					}
				}
			}
			return out
		case "array":
			return []any{}
		case "string":
			if s["format"] == "date-time" {
				return time.Now().UTC().Truncate(time.Second).Format(time.RFC3339)
			}
			return ""
		case "boolean":
			return false
		case "integer", "number":
			if m, ok := s["minimum"].(float64); ok && m > 0 {
				return m
			}
			return 0
		}
	}
	return nil
}

// signalChoice is what the operation page's signal form shows on a GET
// that names a signal: ?signal=NAME ("Use template": the signal selected,
// its template in the payload box) or ?name=NAME (the select changed,
// through htmx: the typed payload kept unless it is empty or another
// signal's template), with the reason typed so far kept. It sets nothing
// for a name the operation does not offer.
func signalChoice(op *api.Operation, q map[string][]string, data map[string]any) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	name, fill := get("signal"), true
	if name == "" {
		name, fill = get("name"), false
	}
	if name == "" || op == nil || op.Signals == nil {
		return
	}
	i := slices.IndexFunc(*op.Signals, func(d api.SignalDecl) bool { return d.Name == name })
	if i < 0 {
		return
	}
	payload := get("payload")
	if !fill && strings.TrimSpace(payload) != "" {
		for _, d := range *op.Signals {
			if t := schemaTemplate(d.Schema); t != "" && t == strings.TrimSpace(payload) {
				fill = true
			}
		}
	}
	if fill || strings.TrimSpace(payload) == "" {
		payload = schemaTemplate((*op.Signals)[i].Schema)
	}
	data["SignalName"], data["SignalPayload"], data["SignalReason"] = name, payload, get("reason")
}
