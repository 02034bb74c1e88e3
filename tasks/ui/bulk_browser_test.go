package ui_test

import (
	"context"
	"encoding/csv"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/internal/testenv"
)

// waitText waits, without reloading, until the element sel contains want:
// the page's live updates bring it.
func waitText(t *testing.T, bctx context.Context, sel, want string) {
	t.Helper()
	testenv.Eventually(t, 60*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(bctx, 5*time.Second)
		defer cancel()
		s, err := chromedp.Run(ctx, textOf(sel))
		return err == nil && strings.Contains(s, want)
	}, "%s to contain %q", sel, want)
}

// previewBulk opens the operations page at list, fills its bulk form with
// fill and asks for the preview.
func previewBulk(t *testing.T, bctx context.Context, list string, fill ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	acts := append([]chromedp.Action[chromedp.Void]{chromedp.Navigate(list), chromedp.WaitVisible(chromedp.CSS("#bulk-form"))}, fill...)
	run(t, bctx, append(acts, chromedp.Submit(chromedp.CSS(`#bulk-form button`)), chromedp.WaitVisible(chromedp.CSS("#bulk-preview")))...)
}

// TestBulkWalk: an operator ticks an operation and previews a bulk
// relaunch of it, then previews one of everything matching the filter
// (the completed operation is skipped, and says why), confirms, watches
// the job finish live, downloads its report; then pauses, resumes and
// stops a slow job from its page.
func TestBulkWalk(t *testing.T) {
	s := newSite(t)
	bctx := newBrowser(t)
	for _, id := range []string{"renew-f-0", "renew-f-1", "renew-f-2"} {
		s.start(t, id, "acme", renewIn{Domain: id + ".fr", Fail: true})
	}
	s.start(t, "renew-ok", "globex", renewIn{Domain: "ok.com"})
	for _, id := range []string{"renew-f-0", "renew-f-1", "renew-f-2"} {
		s.waitStatus(t, id, "failed")
	}
	s.waitStatus(t, "renew-ok", "completed")

	signIn(t, bctx, s.url, s.tokens["oscar"])
	list := s.url + "/ui/operations?kind=renewal&live=0"
	// The ticked operations only.
	previewBulk(t, bctx, list, chromedp.Click(chromedp.CSS("#sel-renew-f-1")),
		chromedp.SetValue(chromedp.CSS(`#bulk-form input[name="reason"]`), "registry back"))
	require.Contains(t, text(t, bctx, "#bulk-count"), "Would relaunch 1 of 1")
	require.Contains(t, text(t, bctx, "#bulk-sample"), "renew-f-1")

	// From a named step: an operation without one is skipped, and says so.
	previewBulk(t, bctx, list, chromedp.Click(chromedp.CSS("#sel-renew-f-1")),
		chromedp.SetValue(chromedp.CSS(`#bulk-form input[name="from_step"]`), "nope"),
		chromedp.SetValue(chromedp.CSS(`#bulk-form input[name="reason"]`), "registry back"))
	require.Contains(t, text(t, bctx, "#bulk-count"), "Would relaunch 0 of 1")
	require.Contains(t, text(t, bctx, "#bulk-ineligible"), `no step named "nope"`)

	// Everything matching the filter: a dry run first, nothing changed.
	previewBulk(t, bctx, list, chromedp.Click(chromedp.CSS("#scope-filter")),
		chromedp.SetValue(chromedp.CSS(`#bulk-form input[name="rate"]`), "20"),
		chromedp.SetValue(chromedp.CSS(`#bulk-form input[name="reason"]`), "registry back"))
	require.Contains(t, text(t, bctx, "#bulk-count"), "Would relaunch 3 of 4")
	skipped := text(t, bctx, "#bulk-ineligible")
	require.Contains(t, skipped, "renew-ok")
	require.Contains(t, skipped, "completed")
	var jobs int
	require.NoError(t, s.e.DB().Get(&jobs, `SELECT count(*) FROM `+s.e.Schema()+`.bulk_jobs`))
	require.Zero(t, jobs, "a preview starts nothing")
	shot(t, bctx, "bulk-preview")

	// Confirm, and watch the job finish on its live page.
	run(t, bctx, chromedp.Submit(chromedp.CSS(`#bulk-confirm button`)), chromedp.WaitVisible(chromedp.CSS("#bulk-state")))
	require.Contains(t, text(t, bctx, ".flash"), "Bulk job started")
	jobURL, _, _ := strings.Cut(value(t, bctx, chromedp.Location()), "?")
	waitText(t, bctx, "#bulk-state", "completed")
	require.Contains(t, text(t, bctx, "#bulk-progress"), "3 done, 0 failed, 1 skipped, 0 pending of 4")
	require.Contains(t, text(t, bctx, "#bulk-report"), "renew-f-2")
	shot(t, bctx, "bulk-job")
	for _, id := range []string{"renew-f-0", "renew-f-1", "renew-f-2"} {
		var runs int
		require.NoError(t, s.e.DB().Get(&runs, `SELECT count(*) FROM `+s.e.Schema()+`.runs WHERE workflow_id = $1`, id))
		require.Equal(t, 2, runs, id)
	}

	// Download the report, as the link gives it.
	href := value(t, bctx, chromedp.AttributeValue(chromedp.CSS("#report-csv"), "href"))
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	hc := &http.Client{Jar: jar}
	res, err := hc.PostForm(s.url+"/ui/signin", url.Values{"token": {s.tokens["vera"]}})
	require.NoError(t, err)
	res.Body.Close()
	res, err = hc.Get(s.url + href.Value)
	require.NoError(t, err)
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	require.Equal(t, 200, res.StatusCode, string(body))
	require.Contains(t, res.Header.Get("Content-Disposition"), "attachment")
	recs, err := csv.NewReader(strings.NewReader(string(body))).ReadAll()
	require.NoError(t, err)
	require.Len(t, recs, 5)
	outcomes := map[string]int{}
	for _, r := range recs[1:] {
		outcomes[r[1]]++
	}
	require.Equal(t, map[string]int{"done": 3, "skipped": 1}, outcomes)

	// The jobs page lists it.
	run(t, bctx, chromedp.Navigate(s.url+"/ui/bulk"), chromedp.WaitVisible(chromedp.CSS("#bulk-jobs")))
	require.Contains(t, text(t, bctx, "#bulk-jobs"), jobURL[strings.LastIndex(jobURL, "/")+1:])
	shot(t, bctx, "bulk-jobs")

	// A slow job (the relaunched operations failed again): pause, resume, stop.
	for _, id := range []string{"renew-f-0", "renew-f-1", "renew-f-2"} {
		testenv.Eventually(t, 30*time.Second, func() bool {
			var open int
			_ = s.e.DB().Get(&open, `SELECT count(*) FROM `+s.e.Schema()+`.runs WHERE workflow_id = $1 AND status IN ('pending','running','waiting')`, id)
			return open == 0
		}, "%s closed again", id)
	}
	run(t, bctx, chromedp.Navigate(s.url+"/ui/operations?status=failed&live=0"), chromedp.WaitVisible(chromedp.CSS("#bulk-form")),
		chromedp.Click(chromedp.CSS("#scope-filter")),
		chromedp.SetValue(chromedp.CSS(`#bulk-form input[name="rate"]`), "0.2"),
		chromedp.SetValue(chromedp.CSS(`#bulk-form input[name="reason"]`), "slowly"),
		chromedp.Submit(chromedp.CSS(`#bulk-form button`)), chromedp.WaitVisible(chromedp.CSS("#bulk-confirm")),
		chromedp.Submit(chromedp.CSS(`#bulk-confirm button`)), chromedp.WaitVisible(chromedp.CSS("#bulk-state")))
	slow, _, _ := strings.Cut(value(t, bctx, chromedp.Location()), "?")
	run(t, bctx, chromedp.Navigate(slow+"?live=0"), chromedp.WaitVisible(chromedp.CSS("#bulk-pause")),
		chromedp.Click(chromedp.CSS("#bulk-pause")), chromedp.WaitVisible(chromedp.CSS("#bulk-resume")))
	require.Contains(t, text(t, bctx, ".flash"), "Pause asked")
	eventuallyText(t, bctx, slow+"?live=0", "#bulk-state", "paused")
	shot(t, bctx, "bulk-job-paused")
	// The stop button was already there: wait for the page the resume leads to.
	run(t, bctx, chromedp.Click(chromedp.CSS("#bulk-resume")))
	testenv.Eventually(t, 30*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(bctx, 5*time.Second)
		defer cancel()
		loc, err := chromedp.Run(ctx, chromedp.Location())
		return err == nil && strings.Contains(loc, "done=resume")
	}, "the resumed job's page")
	require.Contains(t, text(t, bctx, ".flash"), "Resumed")
	run(t, bctx, chromedp.Navigate(slow+"?live=0"), chromedp.WaitVisible(chromedp.CSS("#bulk-stop")),
		chromedp.SetValue(chromedp.CSS(`#bulk-controls input[name="reason"]`), "enough"),
		chromedp.Click(chromedp.CSS("#bulk-stop")), chromedp.WaitVisible(chromedp.CSS(".flash")))
	eventuallyText(t, bctx, slow+"?live=0", "#bulk-state", "stopped")
	require.Contains(t, text(t, bctx, "#bulk-report"), "the job was stopped")
}
