package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/graftdev/graft/tasks"
)

// PreviewFlag counts what a proposed flag for a kind would route over the
// pending legacy rows of every configured intake source that declares the
// kind, before and after, and changes nothing.
func (s *Server) PreviewFlag(ctx context.Context, req PreviewFlagRequestObject) (PreviewFlagResponseObject, error) {
	b := req.Body
	nf, err := proposedFlag(req.Kind, b.Killed, b.DefaultPercent, b.KeyRules)
	if err != nil {
		return nil, err
	}
	limit := 0
	if b.Limit != nil {
		if *b.Limit < 1 || *b.Limit > tasks.PreviewLimitMax {
			return nil, badRequest("limit", "must be between 1 and %d", tasks.PreviewLimitMax)
		}
		limit = *b.Limit
	}
	out := FlagPreview{Kind: req.Kind, ByKey: []KeyPreview{}}
	found := false
	for _, in := range s.cfg.Intakes {
		if !in.Declares(req.Kind) {
			continue
		}
		found = true
		p, err := in.PreviewFlag(ctx, nf, limit)
		if errors.Is(err, tasks.ErrPreviewUnavailable) {
			return nil, &problemError{status: http.StatusUnprocessableEntity, kind: "preview-unavailable", title: "Preview unavailable", detail: err.Error()}
		}
		if err != nil {
			return nil, flagError(err)
		}
		out.Limit = p.Limit
		out.Scanned += p.Scanned
		out.Estimate = out.Estimate || p.Estimate
		out.Before.Graft += p.Before.Graft
		out.Before.Legacy += p.Before.Legacy
		out.After.Graft += p.After.Graft
		out.After.Legacy += p.After.Legacy
		out.ToGraft += p.ToGraft
		out.ToLegacy += p.ToLegacy
		for _, k := range p.ByKey {
			out.ByKey = append(out.ByKey, KeyPreview{Key: k.Key, Rows: k.Rows, BeforeGraft: k.BeforeGraft, AfterGraft: k.AfterGraft})
		}
	}
	if !found {
		return nil, notFound("an intake source in this server that declares kind " + quote(req.Kind))
	}
	if out.Estimate {
		out.Note = ptr("an estimate: the scan stopped at the limit, so the counts are over the first pending rows found, not all of them")
	}
	return PreviewFlag200JSONResponse(out), nil
}
