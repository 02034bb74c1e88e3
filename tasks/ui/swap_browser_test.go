package ui_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

// swappingPage replaces its #live section with a fresh copy every
// millisecond, as the live pages' htmx polls do every PollInterval
// (hx-swap="outerHTML"), only far more often.
const swappingPage = `<!doctype html><html><body>
<section id="live"><table class="ops"><tr><td>renew-acme-wait</td></tr></table></section>
<script>
setInterval(() => { const s = document.getElementById("live"); s.replaceWith(s.cloneNode(true)); }, 1);
</script>
</body></html>`

// TestTextThroughSwaps: the walks' text helper reads an element that the
// page keeps replacing, as a live page does, without failing on a node
// that was swapped out between finding it and reading it ("No node with
// given id found", once seen in TestOperatorWalk on a loaded machine).
func TestTextThroughSwaps(t *testing.T) {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(swappingPage))
	}))
	t.Cleanup(hs.Close)
	bctx := newBrowser(t)
	run(t, bctx, chromedp.Navigate(hs.URL), chromedp.WaitVisible(chromedp.CSS("table.ops")))
	for range 200 {
		require.Contains(t, text(t, bctx, "table.ops"), "renew-acme-wait")
	}
}
