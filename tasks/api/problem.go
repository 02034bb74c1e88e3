package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/graftdev/graft/engine"
)

// problemTypeBase prefixes every problem type URI; the suffix names the kind.
const problemTypeBase = "https://graft.dev/problems/"

// ProblemNoFailedStep is the type of the 409 a relaunch without a from_step
// answers when the operation's latest run has no failed activity: there is
// no default step to relaunch from, and the caller must name one.
const ProblemNoFailedStep = problemTypeBase + noFailedStepKind

const noFailedStepKind = "no-failed-step"

// problemError is an error with the RFC 9457 problem it answers as.
type problemError struct {
	status int
	kind   string // the type URI's suffix
	title  string
	detail string
	field  string
}

func (p *problemError) Error() string {
	if p.field != "" {
		return p.title + ": " + p.field + ": " + p.detail
	}
	return p.title + ": " + p.detail
}

func (p *problemError) problem(instance string) Problem {
	pr := Problem{Type: problemTypeBase + p.kind, Title: p.title, Status: p.status}
	if p.detail != "" {
		pr.Detail = ptr(p.detail)
	}
	if p.field != "" {
		pr.Field = ptr(p.field)
	}
	if instance != "" {
		pr.Instance = ptr(instance)
	}
	return pr
}

func badRequest(field, format string, args ...any) *problemError {
	return &problemError{status: http.StatusBadRequest, kind: "invalid-request", title: "Invalid request", field: field, detail: fmt.Sprintf(format, args...)}
}

func notFound(what string) *problemError {
	return &problemError{status: http.StatusNotFound, kind: "not-found", title: "Not found", detail: what + " does not exist"}
}

func conflict(format string, args ...any) *problemError {
	return &problemError{status: http.StatusConflict, kind: "conflict", title: "Conflict", detail: fmt.Sprintf(format, args...)}
}

func forbidden(format string, args ...any) *problemError {
	return &problemError{status: http.StatusForbidden, kind: "forbidden", title: "Forbidden", detail: fmt.Sprintf(format, args...)}
}

var errUnauthenticatedProblem = &problemError{status: http.StatusUnauthorized, kind: "unauthenticated", title: "Unauthenticated",
	detail: "send a valid, unexpired bearer token: Authorization: Bearer graft_..."}

// toProblem maps any error a handler returns to its problem. Errors the
// handlers did not classify are 500s whose detail is not shown to the caller
// (it is logged).
func toProblem(err error) (*problemError, bool) {
	var p *problemError
	var fe *FieldError
	switch {
	case errors.As(err, &p):
		return p, true
	case errors.As(err, &fe):
		return badRequest(fe.Field, "%s", fe.Detail), true
	case errors.Is(err, ErrUnauthenticated):
		return errUnauthenticatedProblem, true
	case errors.Is(err, engine.ErrNotFound), errors.Is(err, ErrTokenNotFound):
		return &problemError{status: http.StatusNotFound, kind: "not-found", title: "Not found", detail: err.Error()}, true
	case errors.Is(err, engine.ErrAlreadyStarted), errors.Is(err, engine.ErrNotRunning):
		return conflict("%s", err.Error()), true
	case errors.Is(err, engine.ErrUnknownWorkflow):
		return badRequest("kind", "%s", err.Error()), true
	case errors.Is(err, engine.ErrBadInput), errors.Is(err, engine.ErrPayloadTooLarge):
		return badRequest("input", "%s", err.Error()), true
	}
	return &problemError{status: http.StatusInternalServerError, kind: "internal", title: "Internal error",
		detail: "the server failed; the error is in its log"}, false
}

// writeProblem writes p as application/problem+json.
func writeProblem(w http.ResponseWriter, r *http.Request, p *problemError) {
	w.Header().Set("Content-Type", "application/problem+json")
	if p.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="graft"`)
	}
	w.WriteHeader(p.status)
	_ = json.NewEncoder(w).Encode(p.problem(r.URL.Path))
}

// paramProblem turns the generated router's parameter errors into problems
// naming the parameter.
func paramProblem(err error) *problemError {
	var (
		inv  *InvalidParamFormatError
		req  *RequiredParamError
		many *TooManyValuesForParamError
	)
	switch {
	case errors.As(err, &inv):
		return badRequest(inv.ParamName, "%s", strings.TrimSpace(inv.Err.Error()))
	case errors.As(err, &req):
		return badRequest(req.ParamName, "is required")
	case errors.As(err, &many):
		return badRequest(many.ParamName, "takes one value, got %d", many.Count)
	}
	return badRequest("", "%s", err.Error())
}
