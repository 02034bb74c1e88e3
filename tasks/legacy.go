package tasks

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/lib/pq"
)

// Row returns operation id's legacy row as the source declares it: every
// column by name, typed as PostgreSQL renders it in JSON (numbers as
// json.Number, timestamps as RFC 3339 text, jsonb as its value); ok is
// false when the table has no such row, including an id that is not a
// value of the ID column's type. It serves the operations API's view of an
// operation (tasks/api.Legacy).
func (in *Intake) Row(ctx context.Context, id string) (map[string]any, bool, error) {
	var raw []byte
	err := in.db.QueryRowContext(ctx, in.sql.row, id).Scan(&raw)
	var pe *pq.Error
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, false, nil
	case errors.As(err, &pe) && (pe.Code == "22P02" || pe.Code == "22003"):
		return nil, false, nil // not a value of the ID column's type: no such row
	case err != nil:
		return nil, false, fmt.Errorf("%sread operation %s: %w", in.src.prefix(), id, err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var row map[string]any
	if err := dec.Decode(&row); err != nil {
		return nil, false, fmt.Errorf("%soperation %s: decode row: %w", in.src.prefix(), id, err)
	}
	return row, true, nil
}
