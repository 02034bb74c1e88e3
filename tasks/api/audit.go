package api

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
)

// audit records an action a principal took: who, when, on which operation
// and why. Actions are recorded after they succeed; a refused request
// changes nothing, this table included.
func (s *Server) audit(ctx context.Context, db sqlx.ExecerContext, p Principal, action, operationID, reason string, detail any) error {
	var d sql.NullString // text, not bytes: binary parameters would send bytes as binary jsonb
	if detail != nil {
		b, err := json.Marshal(detail)
		if err != nil {
			return fmt.Errorf("api: audit %s: %w", action, err)
		}
		d = sql.NullString{String: string(b), Valid: true}
	}
	_, err := db.ExecContext(ctx, `INSERT INTO `+s.schema+`.api_audit (actor, token_id, role, action, operation_id, reason, detail)
		VALUES ($1, NULLIF($2, ''), $3, $4, NULLIF($5, ''), NULLIF($6, ''), $7::jsonb)`,
		p.Name, p.TokenID, string(p.Role), action, operationID, reason, d)
	if err != nil {
		return fmt.Errorf("api: audit %s: %w", action, err)
	}
	return nil
}

// auditEntry is one row of the audit log.
type auditEntry struct {
	At     time.Time `db:"at"`
	Actor  string    `db:"actor"`
	Role   string    `db:"role"`
	Action string    `db:"action"`
	Reason *string   `db:"reason"`
	Detail []byte    `db:"detail"`
}

func (s *Server) auditOf(ctx context.Context, operationID string) ([]auditEntry, error) {
	var out []auditEntry
	err := s.db.SelectContext(ctx, &out, `SELECT at, actor, role, action, reason, detail FROM `+s.schema+`.api_audit
		WHERE operation_id = $1 ORDER BY id`, operationID)
	if err != nil {
		return nil, fmt.Errorf("api: audit of %s: %w", operationID, err)
	}
	return out, nil
}
