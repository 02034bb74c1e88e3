package graftsync

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"
)

// LoadMapping reads a mapping from a YAML or JSON file (by extension: .json
// is JSON, anything else YAML) and validates its shape. Unknown fields are
// errors, so a misspelt key is caught rather than ignored. Extra columns
// refer to Go functions by name (ExtraColumn.Func), resolved from
// Config.Funcs by New.
func LoadMapping(path string) (*Mapping, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("graftsync: %w", err)
	}
	if strings.EqualFold(filepath.Ext(path), ".json") {
		return ParseMappingJSON(b)
	}
	return ParseMappingYAML(b)
}

// ParseMappingYAML parses and validates a YAML mapping.
func ParseMappingYAML(b []byte) (*Mapping, error) {
	var m Mapping
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("graftsync: parse YAML mapping: %w", err)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// ParseMappingJSON parses and validates a JSON mapping.
func ParseMappingJSON(b []byte) (*Mapping, error) {
	var m Mapping
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("graftsync: parse JSON mapping: %w", err)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}
