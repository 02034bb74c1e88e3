package graftsync

import (
	"fmt"

	"github.com/graftdev/graft/internal/strictdecode"
)

// LoadMapping reads a mapping from a YAML or JSON file (by extension: .json
// is JSON, anything else YAML) and validates its shape. Unknown fields are
// errors, so a misspelt key is caught rather than ignored. Extra columns
// refer to Go functions by name (ExtraColumn.Func), resolved from
// Config.Funcs by New.
func LoadMapping(path string) (*Mapping, error) {
	b, isJSON, err := strictdecode.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("graftsync: %w", err)
	}
	if isJSON {
		return ParseMappingJSON(b)
	}
	return ParseMappingYAML(b)
}

// ParseMappingYAML parses and validates a YAML mapping.
func ParseMappingYAML(b []byte) (*Mapping, error) {
	return parseMapping(strictdecode.YAML, "YAML", b)
}

// ParseMappingJSON parses and validates a JSON mapping.
func ParseMappingJSON(b []byte) (*Mapping, error) {
	return parseMapping(strictdecode.JSON, "JSON", b)
}

func parseMapping(decode func([]byte, any) error, format string, b []byte) (*Mapping, error) {
	var m Mapping
	if err := decode(b, &m); err != nil {
		return nil, fmt.Errorf("graftsync: parse %s mapping: %w", format, err)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}
