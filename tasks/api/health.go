package api

import (
	"context"
	"encoding/json"
	"net/http"
	"time"
)

// healthz answers 200 while the process serves requests.
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
}

// readyz answers 200 when PostgreSQL (and Redis, when configured) answer
// within two seconds, 503 naming the one that does not otherwise.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	checks := map[string]string{}
	ok := true
	if err := s.db.PingContext(ctx); err != nil {
		checks["postgres"], ok = err.Error(), false
	} else {
		checks["postgres"] = "ok"
	}
	if s.cfg.Redis != nil {
		if err := s.cfg.Redis.Ping(ctx).Err(); err != nil {
			checks["redis"], ok = err.Error(), false
		} else {
			checks["redis"] = "ok"
		}
	}
	w.Header().Set("Content-Type", "application/json")
	status := "ok"
	if !ok {
		status = "unavailable"
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"status": status, "checks": checks})
}
