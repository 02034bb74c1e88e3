package typeschema_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/internal/typeschema"
)

type base struct {
	ID string `json:"id"`
}

type payload struct {
	base
	Approved bool              `json:"approved"`
	Note     *string           `json:"note,omitempty"`
	Count    int8              `json:"count"`
	Size     uint              `json:"size"`
	At       time.Time         `json:"at"`
	Blob     []byte            `json:"blob"`
	Tags     map[string]string `json:"tags"`
	Raw      json.RawMessage   `json:"raw"`
	Skipped  string            `json:"-"`
	Plain    string
	hidden   string //nolint:unused // not in the JSON
}

type empty struct{}

// strict decodes b into a new value of t as the engine checks a signal's
// payload: unknown fields and trailing data refused, null refused when
// the type carries a value.
func strict(t reflect.Type, b string) error {
	if strings.TrimSpace(b) == "null" {
		if typeschema.Carries(t) != "" {
			return errNull
		}
		return nil
	}
	d := json.NewDecoder(strings.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(reflect.New(t).Interface()); err != nil {
		return err
	}
	if d.More() {
		return errNull
	}
	return nil
}

var errNull = errors.New("refused")

func compile(t *testing.T, typ reflect.Type) *jsonschema.Schema {
	t.Helper()
	b, err := json.Marshal(typeschema.Of(typ))
	require.NoError(t, err)
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	require.NoError(t, err)
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	c.AssertContent()
	require.NoError(t, c.AddResource("s.json", doc))
	s, err := c.Compile("s.json")
	require.NoError(t, err)
	return s
}

// A payload the schema accepts is one the strict decode accepts, and one
// it refuses the strict decode refuses, but where the schema is stricter
// on purpose (null for a field that is not a pointer, property names in
// another case, a []byte as an array, an array longer than its type's).
func TestSchemaAgreesWithStrictDecode(t *testing.T) {
	for _, tc := range []struct {
		typ      reflect.Type
		payload  string
		stricter bool // the schema refuses what the decode takes
	}{
		{reflect.TypeFor[payload](), `{"approved":true}`, false},
		{reflect.TypeFor[payload](), `{"id":"a","approved":true,"note":null,"count":-128,"size":3,"at":"2026-12-07T01:02:03Z","blob":"aGk=","tags":{"a":"b"},"raw":[1,{}],"Plain":"p"}`, false},
		{reflect.TypeFor[payload](), `{"approved":"yes"}`, false},
		{reflect.TypeFor[payload](), `{"approved":true,"urgent":true}`, false},
		{reflect.TypeFor[payload](), `{"base":{"id":"a"}}`, false},
		{reflect.TypeFor[payload](), `{"Skipped":"x"}`, false},
		{reflect.TypeFor[payload](), `{"hidden":"x"}`, false},
		{reflect.TypeFor[payload](), `{"count":128}`, false},
		{reflect.TypeFor[payload](), `{"count":1.5}`, false},
		{reflect.TypeFor[payload](), `{"size":-1}`, false},
		{reflect.TypeFor[payload](), `{"at":"yesterday"}`, false},
		{reflect.TypeFor[payload](), `{"blob":[1,2]}`, true}, // as json.Marshal writes it: base64
		{reflect.TypeFor[payload](), `{"blob":"not base64!"}`, false},
		{reflect.TypeFor[payload](), `{"tags":{"a":1}}`, false},
		{reflect.TypeFor[payload](), `[]`, false},
		{reflect.TypeFor[payload](), `null`, false},
		{reflect.TypeFor[payload](), `{"approved":null}`, true},
		{reflect.TypeFor[payload](), `{"Approved":true}`, true},
		{reflect.TypeFor[*payload](), `null`, false},
		{reflect.TypeFor[*payload](), `{"approved":1}`, false},
		{reflect.TypeFor[empty](), `null`, false},
		{reflect.TypeFor[empty](), `{}`, false},
		{reflect.TypeFor[empty](), `{"a":1}`, false},
		{reflect.TypeFor[string](), `"x"`, false},
		{reflect.TypeFor[string](), `null`, false},
		{reflect.TypeFor[[]int](), `[1,2]`, false},
		{reflect.TypeFor[[]int](), `[1,"2"]`, false},
		{reflect.TypeFor[[2]int](), `[1,2,3]`, true}, // json drops the third
		{reflect.TypeFor[any](), `{"a":[null]}`, false},
		{reflect.TypeFor[any](), `null`, false},
	} {
		t.Run(tc.typ.String()+" "+tc.payload, func(t *testing.T) {
			v, err := jsonschema.UnmarshalJSON(strings.NewReader(tc.payload))
			require.NoError(t, err)
			schemaErr := compile(t, tc.typ).Validate(v)
			decodeErr := strict(tc.typ, tc.payload)
			if tc.stricter {
				require.NoError(t, decodeErr)
				require.Error(t, schemaErr)
				return
			}
			require.Equal(t, decodeErr == nil, schemaErr == nil, "decode: %v; schema: %v", decodeErr, schemaErr)
		})
	}
}

// The schema of a registered signal as the API shows it.
func TestOf(t *testing.T) {
	require.Nil(t, typeschema.Of(nil))
	require.Equal(t, map[string]any{"type": []any{"string", "null"}}, typeschema.Of(reflect.TypeFor[*string]()))
	require.Equal(t, map[string]any{"type": []any{"object", "null"}, "properties": map[string]any{}, "additionalProperties": false},
		typeschema.Of(reflect.TypeFor[empty]()))
	s := typeschema.Of(reflect.TypeFor[payload]())
	props := s["properties"].(map[string]any)
	require.Equal(t, "object", s["type"])
	require.Equal(t, false, s["additionalProperties"])
	require.Contains(t, props, "id", "an embedded struct's fields are the outer's")
	require.NotContains(t, props, "base")
	require.NotContains(t, props, "Skipped")
	require.NotContains(t, props, "hidden")
	require.Equal(t, map[string]any{"type": "boolean"}, props["approved"])
	require.Equal(t, map[string]any{"type": []any{"string", "null"}}, props["note"])
	require.Equal(t, map[string]any{"type": "string", "format": "date-time"}, props["at"])
	require.Equal(t, map[string]any{"type": "string", "contentEncoding": "base64"}, props["blob"])
	require.Equal(t, map[string]any{}, props["raw"])
	require.Equal(t, "a JSON object", typeschema.Carries(reflect.TypeFor[payload]()))
	require.Empty(t, typeschema.Carries(reflect.TypeFor[*payload]()))
}

// level lists its values, so its schema is an enum of them; like
// cancel.Action it refuses other values when decoded, and as it has
// UnmarshalText it would otherwise be described as any string.
type level string

func (level) Enum() []string { return []string{"low", "high"} }

func (l *level) UnmarshalText(b []byte) error {
	if s := string(b); s != "low" && s != "high" {
		return errors.New("unknown level")
	}
	*l = level(b)
	return nil
}

type levelled struct {
	Level  level  `json:"level"`
	Backup *level `json:"backup,omitempty"`
}

// A type that lists its values (typeschema.Enum) is a string among them;
// the schema and the type's own decode refuse the same payloads.
func TestEnum(t *testing.T) {
	require.Equal(t, map[string]any{"type": "string", "enum": []any{"low", "high"}}, typeschema.Of(reflect.TypeFor[level]()))
	props := typeschema.Of(reflect.TypeFor[levelled]())["properties"].(map[string]any)
	require.Equal(t, map[string]any{"type": "string", "enum": []any{"low", "high"}}, props["level"])
	require.Equal(t, map[string]any{"type": []any{"string", "null"}, "enum": []any{"low", "high", nil}}, props["backup"])
	for _, p := range []string{`{"level":"low"}`, `{"level":"hgh"}`, `{"level":1}`, `{"level":"high","backup":null}`, `{"level":"high","backup":"low"}`, `{"level":"high","backup":"x"}`} {
		v, err := jsonschema.UnmarshalJSON(strings.NewReader(p))
		require.NoError(t, err)
		schemaErr := compile(t, reflect.TypeFor[levelled]()).Validate(v)
		decodeErr := strict(reflect.TypeFor[levelled](), p)
		require.Equal(t, decodeErr == nil, schemaErr == nil, "%s: decode: %v; schema: %v", p, decodeErr, schemaErr)
	}
}
