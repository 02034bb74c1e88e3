package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/graftdev/graft/engine"
)

// server is the coffee shop's customer API. It holds no state of its own:
// everything is in the workflows, so it can be killed and started again at
// any moment.
type server struct {
	c      *engine.Client
	verify *engine.Workflow[Customer, string]
	expiry time.Duration
	// answerWait bounds how long a verify request waits for the workflow
	// to consume its code.
	answerWait time.Duration
}

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/customers", s.createCustomer)
	// "{id}:verify" is not a whole path segment, so the segment is parsed here.
	mux.HandleFunc("POST /v1/customers/{action}", s.verifyCustomer)
	mux.HandleFunc("GET /v1/customers/{id}", s.getCustomer)
	return mux
}

var phoneRe = regexp.MustCompile(`^\+[1-9][0-9]{7,14}$`)

func (s *server) createCustomer(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Phone string `json:"phone"`
	}
	if !decode(w, r, &body) {
		return
	}
	if !phoneRe.MatchString(body.Phone) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("phone %q is not an E.164 number such as +33612345678", body.Phone))
		return
	}
	id := "cus_" + randomHex(8)
	// The customer ID is the workflow ID.
	if _, err := s.verify.Start(r.Context(), s.c, Customer{Phone: body.Phone, Expiry: s.expiry}, &engine.StartOptions{ID: id}); err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusCreated, map[string]string{"id": id, "status": StatusPending})
}

func (s *server) verifyCustomer(w http.ResponseWriter, r *http.Request) {
	id, ok := strings.CutSuffix(r.PathValue("action"), ":verify")
	if !ok || id == "" {
		writeError(w, http.StatusNotFound, "no such action: POST /v1/customers/{id}:verify")
		return
	}
	var body struct {
		Code string `json:"code"`
	}
	if !decode(w, r, &body) {
		return
	}
	if body.Code == "" {
		writeError(w, http.StatusBadRequest, `field "code" is required`)
		return
	}
	request := randomHex(8)
	err := s.c.Signal(r.Context(), id, "verify", Attempt{Code: body.Code, Request: request})
	switch {
	case errors.Is(err, engine.ErrNotFound):
		writeError(w, http.StatusNotFound, "no customer "+id)
		return
	case errors.Is(err, engine.ErrNotRunning):
		s.writeOutcome(w, r.Context(), id) // decided before this code came
		return
	case err != nil:
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	// The signal is durable; wait until the workflow has consumed it. The
	// query replays the run's record, so it answers whichever worker (or
	// none, for the moment) holds the run.
	ctx, cancel := context.WithTimeout(r.Context(), s.answerWait)
	defer cancel()
	for {
		a, err := engine.QueryAs[Answer](ctx, s.c, id, "answer", request)
		if err == nil && a.Status != "" {
			writeJSON(w, statusCode(a.Status), a)
			return
		}
		select {
		case <-ctx.Done():
			writeError(w, http.StatusGatewayTimeout, fmt.Sprintf("the code was received but not yet checked (%v); ask GET /v1/customers/%s", errors.Join(ctx.Err(), err), id))
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (s *server) getCustomer(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	st, err := engine.QueryAs[State](r.Context(), s.c, id, "state", struct{}{})
	switch {
	case errors.Is(err, engine.ErrNotFound):
		writeError(w, http.StatusNotFound, "no customer "+id)
	case err != nil:
		writeError(w, http.StatusInternalServerError, err.Error())
	default:
		writeJSON(w, http.StatusOK, st)
	}
}

// writeOutcome answers with the verification's final outcome: the
// workflow's result, or the type of its typed error, which survives the
// round trip through the database.
func (s *server) writeOutcome(w http.ResponseWriter, ctx context.Context, id string) {
	h, err := s.c.Handle(ctx, id)
	if err == nil {
		_, err = h.Result(ctx)
	}
	var app *engine.ApplicationError
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, Answer{Status: StatusVerified})
	case errors.As(err, &app) && (app.Type == StatusMaxAttemptsReached || app.Type == StatusCodeExpired):
		writeJSON(w, statusCode(app.Type), Answer{Status: app.Type})
	default:
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

// statusCode maps an outcome to its HTTP status.
func statusCode(status string) int {
	switch status {
	case StatusVerified:
		return http.StatusOK
	case StatusWrongCode:
		return http.StatusUnprocessableEntity
	default: // the verification is over and failed
		return http.StatusGone
	}
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "request body: "+err.Error())
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
