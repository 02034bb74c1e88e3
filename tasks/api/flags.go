package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/graftdev/graft/tasks"
)

// flagsStore returns the configured flags store, or a 404 problem on a
// server without one.
func (s *Server) flagsStore() (*tasks.Flags, error) {
	if s.cfg.Flags == nil {
		return nil, &problemError{status: http.StatusNotFound, kind: "not-found", title: "Not found",
			detail: "this server has no flags store (Config.Flags)"}
	}
	return s.cfg.Flags, nil
}

func flagOf(f *tasks.Flag) Flag {
	out := Flag{Kind: f.Kind, Killed: f.Killed, DefaultPercent: f.DefaultPercent, KeyRules: []KeyRule{}, Version: f.Version}
	for _, r := range f.KeyRules {
		out.KeyRules = append(out.KeyRules, KeyRule{Keys: r.Keys, Percent: r.Percent})
	}
	return out
}

// GetFlags returns the flag set at its current version.
func (s *Server) GetFlags(ctx context.Context, _ GetFlagsRequestObject) (GetFlagsResponseObject, error) {
	fs, err := s.flagsStore()
	if err != nil {
		return nil, err
	}
	snap, err := fs.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	problems, err := fs.KeyRuleProblems(ctx, snap)
	if err != nil {
		return nil, err
	}
	out := GetFlags200JSONResponse{Version: snap.Version, Killed: snap.Killed, Flags: []Flag{}}
	for _, f := range snap.Flags {
		fl := flagOf(f)
		if p := flagValueProblem(problems[f.Kind]); p != nil {
			fl.Warning = &p.detail
		}
		out.Flags = append(out.Flags, fl)
	}
	return out, nil
}

// GetFlagAudit returns the flags' change log, newest first.
func (s *Server) GetFlagAudit(ctx context.Context, req GetFlagAuditRequestObject) (GetFlagAuditResponseObject, error) {
	fs, err := s.flagsStore()
	if err != nil {
		return nil, err
	}
	limit := 100
	if req.Params.Limit != nil {
		if *req.Params.Limit < 1 || *req.Params.Limit > 1000 {
			return nil, badRequest("limit", "must be between 1 and 1000")
		}
		limit = *req.Params.Limit
	}
	entries, err := fs.Audit(ctx, deref(req.Params.Kind), limit)
	if err != nil {
		return nil, err
	}
	out := GetFlagAudit200JSONResponse{Items: []FlagAuditEntry{}}
	for _, a := range entries {
		e := FlagAuditEntry{Id: a.ID, Kind: a.Kind, Actor: a.Actor, Reason: a.Reason, Version: a.Version, At: a.At}
		if len(a.Old) > 0 {
			e.Old = ptr(a.Old)
		}
		if len(a.New) > 0 {
			e.New = ptr(a.New)
		}
		out.Items = append(out.Items, e)
	}
	return out, nil
}

// SetFlag changes a kind's flag, or the global kill switch (kind "*"),
// against the version the caller read: a stale version is a 409 and
// changes nothing. The change is audited by the flags store.
func (s *Server) SetFlag(ctx context.Context, req SetFlagRequestObject) (SetFlagResponseObject, error) {
	fs, err := s.flagsStore()
	if err != nil {
		return nil, err
	}
	b := req.Body
	if err := required("reason", b.Reason); err != nil {
		return nil, err
	}
	actor := principalOf(ctx).Name
	if req.Kind == tasks.GlobalKind {
		if b.Killed == nil {
			return nil, badRequest("killed", "is required for the global kill switch")
		}
		if b.DefaultPercent != nil || b.KeyRules != nil {
			return nil, badRequest("key_rules", "the global kill switch has only killed")
		}
		v, err := fs.GlobalKill(ctx, *b.Killed, b.Version, actor, b.Reason)
		if err != nil {
			return nil, flagError(err)
		}
		return SetFlag200JSONResponse{Kind: tasks.GlobalKind, Killed: *b.Killed, KeyRules: []KeyRule{}, Version: v}, nil
	}
	nf, err := proposedFlag(req.Kind, b.Killed, b.DefaultPercent, b.KeyRules)
	if err != nil {
		return nil, err
	}
	f, err := fs.Set(ctx, tasks.Change{Flag: nf, Version: b.Version, Actor: actor, Reason: b.Reason})
	if err != nil {
		return nil, flagError(err)
	}
	return SetFlag200JSONResponse(flagOf(f)), nil
}

// flagError maps the flags store's refusals to problems.
func flagError(err error) error {
	switch {
	case errors.Is(err, tasks.ErrVersionConflict):
		return conflict("%v", err)
	case errors.Is(err, tasks.ErrUnknownKind):
		return badRequest("kind", "%v", err)
	}
	if p := flagValueProblem(err); p != nil {
		return p
	}
	return err
}

// proposedFlag builds and checks the flag a change or a preview proposes;
// fields left out are off (not killed, 0 %, no key rule).
func proposedFlag(kind string, killed *bool, defaultPercent *float64, rules *[]KeyRule) (tasks.Flag, error) {
	nf := tasks.Flag{Kind: kind, KeyRules: []tasks.KeyRule{}}
	if killed != nil {
		nf.Killed = *killed
	}
	if defaultPercent != nil {
		nf.DefaultPercent = *defaultPercent
	}
	if rules != nil {
		for _, r := range *rules {
			nf.KeyRules = append(nf.KeyRules, tasks.KeyRule{Keys: r.Keys, Percent: r.Percent})
		}
	}
	if err := nf.Validate(); err != nil {
		if p := flagValueProblem(err); p != nil {
			return nf, p
		}
		return nf, badRequest("", "%v", err)
	}
	return nf, nil
}

// flagValueProblem names a value the flags refuse (a *tasks.FlagValueError)
// by the API's field, or is nil for another error.
func flagValueProblem(err error) *problemError {
	var ve *tasks.FlagValueError
	switch {
	case errors.As(err, &ve) && ve.Field == "DefaultPercent":
		return badRequest("default_percent", "%s", ve.Plain())
	case errors.As(err, &ve):
		return badRequest("key_rules", "%s", ve.Plain())
	}
	return nil
}
