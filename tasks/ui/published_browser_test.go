package ui_test

import (
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
	"github.com/graftdev/graft/tasks/api"
	"github.com/graftdev/graft/tasks/ui"
)

// TestPublishedSignalHints: a UI in front of a server that registers no
// workflow (as graft server) shows the signals the renewal's worker
// published with their payload's shape, fills in a template, and sends it
// edited; the worker's run receives it and completes.
func TestPublishedSignalHints(t *testing.T) {
	s := newSite(t)
	s.start(t, "renew-pub-wait", "globex", renewIn{Domain: "globex.org", Wait: true})
	s.waitStatus(t, "renew-pub-wait", "waiting")

	e2 := testenv.Engine(t, &engine.Config{Schema: s.e.Schema()})
	srv2, err := api.New(api.Config{Engine: e2})
	require.NoError(t, err)
	base := serveUI(t, srv2, ui.Config{})

	bctx := newBrowser(t)
	signIn(t, bctx, base, s.tokens["oscar"])
	opURL := base + "/ui/operations/renew-pub-wait?live=0"
	run(t, bctx, chromedp.Navigate(opURL), chromedp.WaitVisible(chromedp.CSS("#signal-form")))
	require.Contains(t, text(t, bctx, "#signal-note"), "it offers the signals its workers published")
	require.Contains(t, text(t, bctx, `#signal-hints tr[data-signal="confirm"]`), "the customer confirms the renewal")
	require.Equal(t, `{"approved"?: boolean}`, text(t, bctx, `#signal-hints tr[data-signal="confirm"] .shape`))
	require.Equal(t, `{"action"?: "retry" | "resolve", "note"?: string, "step"?: string}`, text(t, bctx, `#signal-hints tr[data-signal="graft.cancel.operator"] .shape`))

	run(t, bctx, chromedp.SetValue(chromedp.CSS(`#signal-reason`), "customer phoned"),
		chromedp.Click(chromedp.CSS(`#signal-hints tr[data-signal="confirm"] a.use-template`)))
	waitFormValue(t, bctx, "#signal-payload", `{"approved":false}`)
	shot(t, bctx, "operation-published-signal-template")
	// The published schema is checked on submit: a wrong type is refused
	// naming the field, and the payload stays in the box.
	run(t, bctx, chromedp.SetValue(chromedp.CSS(`#signal-payload`), `{"approved":"yes"}`),
		chromedp.Submit(chromedp.CSS(`#signal-form button`)), chromedp.WaitVisible(chromedp.CSS("#action-error")))
	require.Contains(t, text(t, bctx, "#action-error"), "/approved")
	require.Equal(t, `{"approved":"yes"}`, formValue(t, bctx, "#signal-payload"))
	require.Equal(t, "customer phoned", formValue(t, bctx, "#signal-reason"))
	run(t, bctx, chromedp.SetValue(chromedp.CSS(`#signal-payload`), `{"approved":true}`),
		chromedp.Submit(chromedp.CSS(`#signal-form button`)), chromedp.WaitVisible(chromedp.CSS(".flash")))
	require.Contains(t, text(t, bctx, ".flash"), "signal confirm sent")
	s.waitStatus(t, "renew-pub-wait", "completed")
}
