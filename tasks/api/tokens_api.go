package api

import (
	"context"
	"time"
)

// ListTokens lists every token without its secret.
func (s *Server) ListTokens(ctx context.Context, _ ListTokensRequestObject) (ListTokensResponseObject, error) {
	items, err := s.tokens.List(ctx)
	if err != nil {
		return nil, err
	}
	return ListTokens200JSONResponse{Items: items}, nil
}

// CreateToken creates a token; the response is the only place its secret
// appears.
func (s *Server) CreateToken(ctx context.Context, req CreateTokenRequestObject) (CreateTokenResponseObject, error) {
	p := principalOf(ctx)
	b := req.Body
	n := NewToken{Name: b.Name, Role: b.Role, Customer: deref(b.Customer), CreatedBy: p.Name}
	if b.ExpiresInHours != nil {
		if *b.ExpiresInHours < 1 {
			return nil, badRequest("expires_in_hours", "must be at least 1")
		}
		n.Lifetime = time.Duration(*b.ExpiresInHours) * time.Hour
	}
	tok, secret, err := s.tokens.Create(ctx, n)
	if err != nil {
		return nil, err
	}
	if err := s.audit(ctx, s.db, p, "token_create", "", "", map[string]string{"token_id": tok.Id, "name": tok.Name, "role": string(tok.Role)}); err != nil {
		return nil, err
	}
	return CreateToken201JSONResponse{Id: tok.Id, Name: tok.Name, Role: tok.Role, Customer: tok.Customer,
		CreatedAt: tok.CreatedAt, ExpiresAt: tok.ExpiresAt, Secret: secret}, nil
}

// RevokeToken revokes a token at once.
func (s *Server) RevokeToken(ctx context.Context, req RevokeTokenRequestObject) (RevokeTokenResponseObject, error) {
	if err := s.tokens.Revoke(ctx, req.TokenId); err != nil {
		return nil, err
	}
	if err := s.audit(ctx, s.db, principalOf(ctx), "token_revoke", "", "", map[string]string{"token_id": req.TokenId}); err != nil {
		return nil, err
	}
	return RevokeToken204Response{}, nil
}

// WhoAmI describes the calling token.
func (s *Server) WhoAmI(ctx context.Context, _ WhoAmIRequestObject) (WhoAmIResponseObject, error) {
	return WhoAmI200JSONResponse(principalOf(ctx).Token), nil
}
