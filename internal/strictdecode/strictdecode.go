// Package strictdecode reads declarations (a sync mapping, a tasks source)
// from YAML or JSON, refusing unknown fields so that a misspelt key is an
// error rather than ignored. It imports nothing of graft.
package strictdecode

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"
)

// YAML decodes b into v.
func YAML(b []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	return dec.Decode(v)
}

// JSON decodes b into v.
func JSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// ReadFile reads path; isJSON reports whether its extension is .json (any
// other file is YAML).
func ReadFile(path string) (b []byte, isJSON bool, err error) {
	b, err = os.ReadFile(path)
	return b, strings.EqualFold(filepath.Ext(path), ".json"), err
}
