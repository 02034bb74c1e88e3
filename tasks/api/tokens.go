package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// Roles a token can have.
const (
	// RoleAdmin may do everything, and is the only role that manages tokens.
	RoleAdmin = Role("admin")
	// RoleOperator reads and acts on every operation.
	RoleOperator = Role("operator")
	// RoleViewer reads every operation.
	RoleViewer = Role("viewer")
	// RoleCustomer reads its own operations (and cancels them when
	// Config.CustomerMayCancel is set).
	RoleCustomer = Role("customer")
)

// DefaultTokenLifetime is how long a token lives when its creator does not say.
const DefaultTokenLifetime = 90 * 24 * time.Hour

// tokenPrefix starts every secret, so a leaked token is recognisable (and
// scanners can look for it).
const tokenPrefix = "graft_"

// ErrUnauthenticated means a bearer token is missing, malformed, unknown,
// expired or revoked. Which one is deliberately not said.
var ErrUnauthenticated = errors.New("api: missing or invalid bearer token")

// Principal is who a request acts as: the token it carried.
type Principal struct {
	TokenID  string
	Name     string
	Role     Role
	Customer string
	// Token is the token's record (without its secret).
	Token Token
}

// Tokens creates, checks, lists and revokes bearer tokens in graft's schema.
// A token is "graft_<id>_<secret>": the ID finds the row, and the secret's
// SHA-256 is compared in constant time with the stored one. The secret
// (256 random bits) is never stored.
type Tokens struct {
	db    *sqlx.DB
	table string
	now   func() time.Time
}

// NewTokens returns the token store in schema (run Migrate first).
func NewTokens(db *sqlx.DB, schema string) *Tokens {
	return &Tokens{db: db, table: pq.QuoteIdentifier(schema) + ".api_tokens", now: time.Now}
}

// NewToken describes a token to create.
type NewToken struct {
	Name string
	Role Role
	// Customer is required for RoleCustomer and refused for the others.
	Customer string
	// Lifetime defaults to DefaultTokenLifetime.
	Lifetime time.Duration
	// CreatedBy names who created it (a token's name, or "cli" for the
	// bootstrap path).
	CreatedBy string
}

// FieldError is bad input in one named field.
type FieldError struct {
	Field  string
	Detail string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Detail }

func (n NewToken) validate() error {
	switch {
	case strings.TrimSpace(n.Name) == "":
		return &FieldError{"name", "is required"}
	case len(n.Name) > 200:
		return &FieldError{"name", "is longer than 200 characters"}
	case !n.Role.Valid():
		return &FieldError{"role", fmt.Sprintf("%q is not one of admin, operator, viewer, customer", n.Role)}
	case n.Role == RoleCustomer && n.Customer == "":
		return &FieldError{"customer", "is required for the customer role"}
	case n.Role != RoleCustomer && n.Customer != "":
		return &FieldError{"customer", "is only for the customer role"}
	case n.Lifetime < 0:
		return &FieldError{"expires_in_hours", "must be positive"}
	}
	return nil
}

// Create stores a new token and returns it with its secret, which is not
// kept anywhere: show it once.
func (t *Tokens) Create(ctx context.Context, n NewToken) (Token, string, error) {
	if err := n.validate(); err != nil {
		return Token{}, "", err
	}
	if n.Lifetime == 0 {
		n.Lifetime = DefaultTokenLifetime
	}
	idb := make([]byte, 8)
	sec := make([]byte, 32)
	if _, err := rand.Read(idb); err != nil {
		return Token{}, "", err
	}
	if _, err := rand.Read(sec); err != nil {
		return Token{}, "", err
	}
	id := hex.EncodeToString(idb)
	secret := base64.RawURLEncoding.EncodeToString(sec)
	sum := sha256.Sum256([]byte(secret))
	now := t.now()
	tok := Token{Id: id, Name: n.Name, Role: n.Role, CreatedAt: now, ExpiresAt: ptr(now.Add(n.Lifetime))}
	var customer sql.NullString
	if n.Customer != "" {
		customer = sql.NullString{String: n.Customer, Valid: true}
		tok.Customer = ptr(n.Customer)
	}
	_, err := t.db.ExecContext(ctx, `INSERT INTO `+t.table+` (id, name, role, customer, secret_hash, created_at, created_by, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, id, n.Name, string(n.Role), customer, sum[:], now, n.CreatedBy, *tok.ExpiresAt)
	if err != nil {
		return Token{}, "", fmt.Errorf("api: create token: %w", err)
	}
	return tok, tokenPrefix + id + "_" + secret, nil
}

type tokenRow struct {
	ID         string         `db:"id"`
	Name       string         `db:"name"`
	Role       string         `db:"role"`
	Customer   sql.NullString `db:"customer"`
	SecretHash []byte         `db:"secret_hash"`
	CreatedAt  time.Time      `db:"created_at"`
	ExpiresAt  time.Time      `db:"expires_at"`
	LastUsedAt sql.NullTime   `db:"last_used_at"`
	RevokedAt  sql.NullTime   `db:"revoked_at"`
}

func (r *tokenRow) token() Token {
	t := Token{Id: r.ID, Name: r.Name, Role: Role(r.Role), CreatedAt: r.CreatedAt, ExpiresAt: ptr(r.ExpiresAt)}
	if r.Customer.Valid {
		t.Customer = ptr(r.Customer.String)
	}
	if r.LastUsedAt.Valid {
		t.LastUsedAt = ptr(r.LastUsedAt.Time)
	}
	if r.RevokedAt.Valid {
		t.RevokedAt = ptr(r.RevokedAt.Time)
	}
	return t
}

//nolint:gosec // G101: column names (secret_hash among them), not a credential
const tokenColumns = `id, name, role, customer, secret_hash, created_at, expires_at, last_used_at, revoked_at`

// lastUseGranularity bounds how often a token's last use is written: once a
// minute per token, not once per request.
const lastUseGranularity = time.Minute

// Authenticate checks a bearer token and returns who it stands for. Every
// failure is ErrUnauthenticated.
func (t *Tokens) Authenticate(ctx context.Context, bearer string) (Principal, error) {
	rest, ok := strings.CutPrefix(bearer, tokenPrefix)
	if !ok {
		return Principal{}, ErrUnauthenticated
	}
	id, secret, ok := strings.Cut(rest, "_")
	if !ok || len(id) != 16 || len(secret) != 43 {
		return Principal{}, ErrUnauthenticated
	}
	var r tokenRow
	err := t.db.GetContext(ctx, &r, `SELECT `+tokenColumns+` FROM `+t.table+` WHERE id = $1`, id)
	if errors.Is(err, sql.ErrNoRows) {
		return Principal{}, ErrUnauthenticated
	}
	if err != nil {
		return Principal{}, fmt.Errorf("api: authenticate: %w", err)
	}
	sum := sha256.Sum256([]byte(secret))
	now := t.now()
	if subtle.ConstantTimeCompare(sum[:], r.SecretHash) != 1 || r.RevokedAt.Valid || !now.Before(r.ExpiresAt) {
		return Principal{}, ErrUnauthenticated
	}
	if !r.LastUsedAt.Valid || now.Sub(r.LastUsedAt.Time) >= lastUseGranularity {
		if _, err := t.db.ExecContext(ctx, `UPDATE `+t.table+` SET last_used_at = $2 WHERE id = $1`, id, now); err != nil {
			return Principal{}, fmt.Errorf("api: record token use: %w", err)
		}
	}
	return Principal{TokenID: r.ID, Name: r.Name, Role: Role(r.Role), Customer: r.Customer.String, Token: r.token()}, nil
}

// List returns every token, newest first, without secrets.
func (t *Tokens) List(ctx context.Context) ([]Token, error) {
	var rows []tokenRow
	if err := t.db.SelectContext(ctx, &rows, `SELECT `+tokenColumns+` FROM `+t.table+` ORDER BY created_at DESC, id`); err != nil {
		return nil, fmt.Errorf("api: list tokens: %w", err)
	}
	out := make([]Token, len(rows))
	for i := range rows {
		out[i] = rows[i].token()
	}
	return out, nil
}

// ErrTokenNotFound means no token has the ID.
var ErrTokenNotFound = errors.New("api: token not found")

// Revoke revokes a token at once. Revoking a revoked token is harmless.
func (t *Tokens) Revoke(ctx context.Context, id string) error {
	res, err := t.db.ExecContext(ctx, `UPDATE `+t.table+` SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1`, id, t.now())
	if err != nil {
		return fmt.Errorf("api: revoke token: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrTokenNotFound
	}
	return nil
}

func ptr[T any](v T) *T { return &v }
