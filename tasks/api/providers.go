package api

import (
	"context"
	"errors"
	"net"
	"net/http"

	"github.com/graftdev/graft/ratelimit"
)

// providersInspector returns the configured rate-limit inspector, or a 404
// problem on a server without one.
func (s *Server) providersInspector() (*ratelimit.Inspector, error) {
	if s.cfg.Providers == nil {
		return nil, &problemError{status: http.StatusNotFound, kind: "not-found", title: "Not found",
			detail: "this server has no rate-limit inspector (Config.Providers; graft server needs a Redis URL)"}
	}
	return s.cfg.Providers, nil
}

// redisProblem answers a provider request that could not reach Redis, where
// the limiters keep every key's limits and counts, as a 503 that says so
// instead of a 500 that says only "the server failed". The cause (an
// address, a dial error) goes to the log, not to the caller. Other errors
// are returned as they are.
func (s *Server) redisProblem(r string, err error) error {
	var ne net.Error
	if !errors.As(err, &ne) {
		return err
	}
	s.cfg.Logger.Warn("api: providers: Redis does not answer", "request", r, "err", err)
	return &problemError{status: http.StatusServiceUnavailable, kind: "redis-unavailable", title: "Redis unavailable",
		detail: "Redis, where the rate limiters keep their limits and counts, does not answer; the server's log has the error, /readyz the state"}
}

func limitsOf(o *ratelimit.Override) *ProviderLimits {
	if o == nil {
		return nil
	}
	return &ProviderLimits{Concurrency: o.Concurrency, Rate: o.Rate, Burst: o.Burst}
}

func providerOf(k ratelimit.KeyInfo) Provider {
	p := Provider{Key: k.Key, InFlight: k.InFlight, RecentRate: k.RecentRate, Waiters: k.Waiters,
		Configured: limitsOf(k.Configured), Override: limitsOf(k.Override), Limits: limitsOf(k.Effective())}
	if !k.ReportedAt.IsZero() {
		p.UpdatedAt = ptr(k.ReportedAt)
	}
	return p
}

// ListProviders lists each rate-limit key with its limits, leases in
// flight, recent rate and throttled waiters.
func (s *Server) ListProviders(ctx context.Context, _ ListProvidersRequestObject) (ListProvidersResponseObject, error) {
	in, err := s.providersInspector()
	if err != nil {
		return nil, err
	}
	keys, err := in.Inspect(ctx)
	if err != nil {
		return nil, s.redisProblem("list", err)
	}
	out := ListProviders200JSONResponse{Items: []Provider{}}
	for _, k := range keys {
		out.Items = append(out.Items, providerOf(k))
	}
	return out, nil
}

// SetProviderLimits overrides a key's concurrency, rate and burst for every
// worker's limiter (they pick it up at their next refresh, about a second),
// or clears the override. Fields left out keep the limits in force.
// Audited.
func (s *Server) SetProviderLimits(ctx context.Context, req SetProviderLimitsRequestObject) (SetProviderLimitsResponseObject, error) {
	in, err := s.providersInspector()
	if err != nil {
		return nil, err
	}
	b := req.Body
	if err := required("reason", b.Reason); err != nil {
		return nil, err
	}
	if err := required("key", req.Key); err != nil {
		return nil, err
	}
	cur, err := in.Key(ctx, req.Key)
	if err != nil {
		return nil, s.redisProblem("set "+req.Key, err)
	}
	clear := b.Clear != nil && *b.Clear
	var o ratelimit.Override
	switch {
	case clear:
		if b.Concurrency != nil || b.Rate != nil || b.Burst != nil {
			return nil, badRequest("clear", "clear takes no limits")
		}
		if err := in.ClearOverride(ctx, req.Key); err != nil {
			return nil, err
		}
	default:
		if eff := cur.Effective(); eff != nil {
			o = *eff
		} else if b.Concurrency == nil || b.Rate == nil {
			return nil, badRequest("concurrency", "no worker has reported key %q yet, so give both concurrency and rate", req.Key)
		}
		if b.Concurrency != nil {
			o.Concurrency = *b.Concurrency
		}
		if b.Rate != nil {
			o.Rate = *b.Rate
		}
		if b.Burst != nil {
			o.Burst = *b.Burst
		}
		if err := o.Validate(); err != nil {
			return nil, badRequest("", "%v", err)
		}
		if err := in.SetOverride(ctx, req.Key, o); err != nil {
			return nil, err
		}
	}
	detail := map[string]any{"key": req.Key, "before": limitsOf(cur.Effective())}
	if clear {
		detail["cleared"] = true
	} else {
		detail["override"] = o
	}
	if err := s.audit(ctx, s.db, principalOf(ctx), "provider_limits", "", b.Reason, detail); err != nil {
		return nil, err
	}
	after, err := in.Key(ctx, req.Key)
	if err != nil {
		return nil, err
	}
	return SetProviderLimits200JSONResponse(providerOf(after)), nil
}
