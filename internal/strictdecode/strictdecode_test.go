package strictdecode_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/internal/strictdecode"
)

type flag struct {
	Key     string `json:"key" yaml:"key"`
	Percent int    `json:"percent" yaml:"percent"`
}

type intake struct {
	BatchSize int    `json:"batch_size,omitempty" yaml:"batch_size,omitempty"`
	Flags     []flag `json:"flags" yaml:"flags"`
}

type config struct {
	Intake intake             `json:"intake" yaml:"intake"`
	Kinds  map[string]*intake `json:"kinds" yaml:"kinds"`
	TLS    *struct {
		Cert string `json:"cert" yaml:"cert"`
	} `json:"tls,omitempty" yaml:"tls,omitempty"`
	Verbose bool `json:"verbose" yaml:"verbose"`
}

// A refused declaration is named as its author wrote it: the path of keys
// and list indexes, the line and the column, not a Go struct's field.
func TestErrorsNameThePathAndPosition(t *testing.T) {
	for _, tc := range []struct{ name, yaml, json, want string }{
		{"wrong type in a list item",
			"intake:\n  flags:\n    - {key: a, percent: 1}\n    - {key: b, percent: 2}\n    - {key: c, percent: lots}\n",
			"{\"intake\": {\"flags\": [\n  {\"key\": \"a\", \"percent\": 1},\n  {\"key\": \"b\", \"percent\": 2},\n  {\"key\": \"c\", \"percent\": \"lots\"}]}}",
			`intake.flags[2].percent (line 5, column 25): want an integer, got "lots"`},
		{"unknown field in a list item",
			"intake:\n  flags: [{key: a}, {pct: 2}]\n",
			"{\"intake\":\n {\"flags\": [{\"key\": \"a\"}, {\"pct\": 2}]}}",
			`intake.flags[1].pct (line 2, column 22): unknown field "pct" (known here: key, percent)`},
		{"map value", "kinds:\n  renew: {batch_size: [1]}\n", "{\"kinds\": {\"renew\": {\"batch_size\": [1]}}}",
			"kinds.renew.batch_size (line 2, column 23): want an integer, got a list"},
		{"out of range", "intake: {batch_size: 99999999999999999999}\n", "{\"intake\": {\"batch_size\": 99999999999999999999}}",
			"intake.batch_size (line 1, column 22): 99999999999999999999 is out of range for an integer"},
		{"a key that is not a word", "kinds:\n  \"re new\": {flags: 3}\n", "{\"kinds\": {\"re new\": {\"flags\": 3}}}",
			`kinds["re new"].flags (line 2, column 21): want a list, got 3`},
		{"bool", "verbose: maybe\n", "{\"verbose\": \"maybe\"}", `verbose (line 1, column 10): want true or false, got "maybe"`},
		{"section not a mapping", "tls: /etc/cert.pem\n", "{\"tls\": \"/etc/cert.pem\"}", `tls (line 1, column 6): want a mapping (key: value), got "/etc/cert.pem"`},
	} {
		t.Run(tc.name+" YAML", func(t *testing.T) {
			var c config
			err := strictdecode.YAML([]byte(tc.yaml), &c)
			require.EqualError(t, err, tc.want)
		})
		t.Run(tc.name+" JSON", func(t *testing.T) {
			var c config
			err := strictdecode.JSON([]byte(tc.json), &c)
			want := tc.want
			switch tc.name {
			case "wrong type in a list item":
				want = `intake.flags[2].percent (line 4, column 27): want an integer, got "lots"`
			case "unknown field in a list item":
				want = `intake.flags[1].pct (line 2, column 28): unknown field "pct" (known here: key, percent)`
			case "map value":
				want = "kinds.renew.batch_size (line 1, column 36): want an integer, got an array"
			case "out of range":
				want = "intake.batch_size (line 1, column 27): 99999999999999999999 is out of range for an integer"
			case "a key that is not a word":
				want = `kinds["re new"].flags (line 1, column 32): want an array, got 3`
			case "bool":
				want = `verbose (line 1, column 13): want true or false, got "maybe"`
			case "section not a mapping":
				want = `tls (line 1, column 9): want an object, got "/etc/cert.pem"`
			}
			require.EqualError(t, err, want)
		})
	}
}

// Malformed documents are refused with where the trouble is.
func TestMalformedDocuments(t *testing.T) {
	var c config
	require.EqualError(t, strictdecode.JSON([]byte("{\"intake\":\n {\"flags\": [{\"percent\": 1},, {}]}}"), &c),
		"line 2, column 28: invalid JSON: invalid character ',' looking for beginning of value")
	require.EqualError(t, strictdecode.JSON([]byte("{\"intake\":\n {\"flags\": "), &c),
		"line 2, column 12: invalid JSON: the input ends inside a value")
	require.EqualError(t, strictdecode.JSON([]byte("{}\n{\"verbose\": true}\n"), &c),
		"line 2, column 1: more after the JSON value; a declaration is one value")
	require.EqualError(t, strictdecode.JSON([]byte(" \n"), &c), "no JSON value (the input is empty)")
	require.EqualError(t, strictdecode.YAML([]byte("# nothing yet\n"), &c), "no YAML document (the input is empty or only comments)")
	require.EqualError(t, strictdecode.YAML([]byte("verbose: true\n---\nverbose: false\n"), &c),
		"line 2, column 1: a second YAML document (---); a declaration is one document")
	require.ErrorContains(t, strictdecode.YAML([]byte("intake: [\n"), &c), "line 1")

	// What is right still decodes.
	require.NoError(t, strictdecode.YAML([]byte("intake: {flags: [{key: a, percent: 5}]}\nkinds: {renew: {batch_size: 2}, x: null}\ntls: {cert: c.pem}\n"), &c))
	require.Equal(t, []flag{{"a", 5}}, c.Intake.Flags)
	require.Equal(t, 2, c.Kinds["renew"].BatchSize)
	require.Equal(t, "c.pem", c.TLS.Cert)
	c = config{}
	require.NoError(t, strictdecode.JSON([]byte("{\"intake\": {\"Flags\": [{\"key\": \"a\", \"percent\": 5}]}}\n\n"), &c))
	require.Equal(t, []flag{{"a", 5}}, c.Intake.Flags)
}
