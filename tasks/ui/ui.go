package ui

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/graftdev/graft/tasks"
	"github.com/graftdev/graft/tasks/api"
)

//go:embed templates/*.html templates/parts/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Prefix is where the UI is mounted: every page and asset lives under it.
const Prefix = "/ui/"

// SessionCookie is the name of the cookie that carries a signed-in session.
const SessionCookie = "graft_session"

// DefaultPollInterval is how often a live page refreshes its data.
const DefaultPollInterval = 5 * time.Second

// contentSecurityPolicy allows scripts, styles and form posts from the UI's
// own origin only: no inline script, no eval, no third party.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Config configures the UI.
type Config struct {
	// API is the operations API's handler (api.Server.Handler). Every page
	// reads and acts through it in process, with the signed-in token, so the
	// UI has exactly the API's roles, customer scoping and validation.
	// Required.
	API http.Handler
	// Secret keys the CSRF tokens. Default: 32 random bytes per process (a
	// restart then invalidates forms already on screen, not sessions).
	Secret []byte
	// PollInterval is how often live pages refresh. Default DefaultPollInterval.
	PollInterval time.Duration
	// Flags, when set, adds the flags page: kill switches and rules (read by
	// staff, changed by admins) and the audit log.
	Flags *tasks.Flags
	// Logger receives unexpected errors. Default slog.Default().
	Logger *slog.Logger
	// BehindTLSProxy marks the session cookie Secure on every request, not
	// only on those that came over TLS: set it when a proxy in front ends
	// TLS and talks plain HTTP to the UI.
	BehindTLSProxy bool
}

// UI is the operator web UI: server-rendered pages over the operations API.
type UI struct {
	cfg    Config
	client *api.ClientWithResponses
	pages  map[string]*template.Template
	mux    *http.ServeMux
}

type tokenKey struct{}

// New returns the UI.
func New(cfg Config) (*UI, error) {
	if cfg.API == nil {
		return nil, errors.New("ui: Config.API is required")
	}
	if cfg.PollInterval < 0 {
		return nil, fmt.Errorf("ui: Config.PollInterval %v is negative", cfg.PollInterval)
	}
	cfg.PollInterval = cmp.Or(cfg.PollInterval, DefaultPollInterval)
	if len(cfg.Secret) == 0 {
		cfg.Secret = make([]byte, 32)
		if _, err := rand.Read(cfg.Secret); err != nil {
			return nil, fmt.Errorf("ui: secret: %w", err)
		}
	}
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	client, err := api.NewClientWithResponses("http://graft.ui",
		api.WithHTTPClient(&http.Client{Transport: handlerTransport{cfg.API}}),
		api.WithRequestEditorFn(func(ctx context.Context, r *http.Request) error {
			if tok, ok := ctx.Value(tokenKey{}).(string); ok {
				r.Header.Set("Authorization", "Bearer "+tok)
			}
			return nil
		}))
	if err != nil {
		return nil, fmt.Errorf("ui: api client: %w", err)
	}
	pages, err := parseTemplates()
	if err != nil {
		return nil, err
	}
	u := &UI{cfg: cfg, client: client, pages: pages, mux: http.NewServeMux()}
	u.routes()
	return u, nil
}

// handlerTransport sends the generated client's requests straight to the
// API handler, in process.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	return rec.Result(), nil
}

// Handler returns the UI's handler; mount it at Prefix.
func (u *UI) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("X-Frame-Options", "DENY")
		u.mux.ServeHTTP(w, r)
	})
}

func (u *UI) routes() {
	static, _ := fs.Sub(staticFS, "static")
	u.mux.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", http.FileServerFS(static)))
	u.mux.HandleFunc("GET /ui/signin", u.signInPage)
	u.mux.HandleFunc("POST /ui/signin", u.signIn)
	u.mux.HandleFunc("POST /ui/signout", u.session(u.signOut))
	u.mux.HandleFunc("GET /ui/{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/operations", http.StatusSeeOther)
	})
	u.mux.HandleFunc("GET /ui/operations", u.session(u.operationsPage))
	u.mux.HandleFunc("GET /ui/operations/{id}", u.session(u.operationPage))
	u.mux.HandleFunc("POST /ui/operations/{id}/cancel", u.session(u.cancelAction))
	u.mux.HandleFunc("POST /ui/operations/{id}/relaunch", u.session(u.relaunchAction))
	u.mux.HandleFunc("POST /ui/operations/{id}/signal", u.session(u.signalAction))
	u.mux.HandleFunc("POST /ui/bulk/preview", u.session(u.bulkSubmit(true)))
	u.mux.HandleFunc("POST /ui/bulk", u.session(u.bulkSubmit(false)))
	u.mux.HandleFunc("GET /ui/bulk", u.session(u.bulkJobsPage))
	u.mux.HandleFunc("GET /ui/bulk/{id}", u.session(u.bulkJobPage))
	u.mux.HandleFunc("POST /ui/bulk/{id}/{what}", u.session(u.bulkControl))
	u.mux.HandleFunc("GET /ui/bulk/{id}/report/{format}", u.session(u.bulkReport))
	u.mux.HandleFunc("GET /ui/flags", u.session(u.flagsPage))
	u.mux.HandleFunc("POST /ui/flags/global", u.session(u.globalKillAction))
	u.mux.HandleFunc("POST /ui/flags/{kind}", u.session(u.setFlagAction))
	u.mux.HandleFunc("GET /ui/overview", u.session(u.overviewPage))
	u.mux.HandleFunc("GET /ui/providers", u.session(u.providersPage))
	u.mux.HandleFunc("POST /ui/providers/{key}", u.session(u.setProviderAction))
}

// viewer is the signed-in principal as the pages see it.
type viewer struct {
	Name     string
	Role     string
	Customer string
	CSRF     string
}

// canAct reports whether the viewer may act on operations.
func (v viewer) CanAct() bool { return v.Role == "admin" || v.Role == "operator" }

type viewerKey struct{}

// session requires a signed-in session: the cookie's token must still be
// valid (the API checks it on every call, so a revoked token signs out at
// once), and a POST must carry the session's CSRF token.
func (u *UI) session(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(SessionCookie)
		if err != nil || c.Value == "" {
			u.toSignIn(w, r)
			return
		}
		ctx := context.WithValue(r.Context(), tokenKey{}, c.Value)
		who, err := u.client.WhoAmIWithResponse(ctx)
		if err != nil {
			u.fail(w, r, err)
			return
		}
		if who.JSON200 == nil {
			u.setSession(w, r, "")
			u.toSignIn(w, r)
			return
		}
		v := viewer{Name: who.JSON200.Name, Role: string(who.JSON200.Role), CSRF: u.csrfToken(c.Value)}
		if who.JSON200.Customer != nil {
			v.Customer = *who.JSON200.Customer
		}
		if r.Method == http.MethodPost {
			got := r.PostFormValue("csrf")
			if subtle.ConstantTimeCompare([]byte(got), []byte(v.CSRF)) != 1 {
				http.Error(w, "ui: the form's CSRF token is missing or stale; reload the page and try again", http.StatusForbidden)
				return
			}
		}
		next(w, r.WithContext(context.WithValue(ctx, viewerKey{}, v)))
	}
}

func viewerOf(ctx context.Context) viewer {
	v, _ := ctx.Value(viewerKey{}).(viewer)
	return v
}

// csrfToken binds a form to its session: an HMAC of the session's token.
func (u *UI) csrfToken(session string) string {
	m := hmac.New(sha256.New, u.cfg.Secret)
	m.Write([]byte("csrf:" + session))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (u *UI) toSignIn(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("HX-Request") != "" {
		w.Header().Set("HX-Redirect", "/ui/signin")
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	http.Redirect(w, r, "/ui/signin", http.StatusSeeOther)
}

// setSession sets the session cookie; an empty token clears it. The cookie
// is HttpOnly and SameSite=Strict, and Secure whenever the request came over
// TLS or a TLS proxy serves the UI (Config.BehindTLSProxy): the UI also
// serves plain HTTP on loopback.
func (u *UI) setSession(w http.ResponseWriter, r *http.Request, token string) {
	maxAge := int((12 * time.Hour).Seconds())
	if token == "" {
		maxAge = -1
	}
	//nolint:gosec // G124: Secure follows the request's TLS, see above
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: token, Path: Prefix,
		HttpOnly: true, Secure: r.TLS != nil || u.cfg.BehindTLSProxy, SameSite: http.SameSiteStrictMode, MaxAge: maxAge})
}

func (u *UI) signInPage(w http.ResponseWriter, r *http.Request) {
	u.render(w, r, "signin", http.StatusOK, map[string]any{"Error": ""})
}

// signIn checks a token with the API and starts a session with it. The
// sign-in form itself needs no CSRF token: it changes nothing but the
// session, and a forged sign-in would need the victim's own secret.
func (u *UI) signIn(w http.ResponseWriter, r *http.Request) {
	tok := strings.TrimSpace(r.PostFormValue("token"))
	if tok == "" {
		u.render(w, r, "signin", http.StatusBadRequest, map[string]any{"Error": "token: enter the token you were given"})
		return
	}
	who, err := u.client.WhoAmIWithResponse(context.WithValue(r.Context(), tokenKey{}, tok))
	if err != nil {
		u.fail(w, r, err)
		return
	}
	if who.JSON200 == nil {
		u.render(w, r, "signin", http.StatusUnauthorized, map[string]any{"Error": "token: unknown, expired or revoked"})
		return
	}
	u.setSession(w, r, tok)
	http.Redirect(w, r, "/ui/operations", http.StatusSeeOther)
}

func (u *UI) signOut(w http.ResponseWriter, r *http.Request) {
	u.setSession(w, r, "")
	http.Redirect(w, r, "/ui/signin", http.StatusSeeOther)
}

// fail answers an unexpected error without its detail.
func (u *UI) fail(w http.ResponseWriter, r *http.Request, err error) {
	u.cfg.Logger.Error("ui: request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	http.Error(w, "ui: internal error", http.StatusInternalServerError)
}

// apiReply is what every answer of the generated client has: its status
// and, when the API refused the call, its problem.
type apiReply interface {
	StatusCode() int
	GetBody() []byte
	GetApplicationproblemJSONDefault() *api.Problem
}

// apiAnswer is the generated client's answer to a call that succeeds with
// a 200 carrying a T.
type apiAnswer[T any] interface {
	apiReply
	GetJSON200() *T
}

// answered returns what the API answered a page's call with, or nil when
// it has answered the request itself: a call that failed as an internal
// error, a call the API refused as page with data and the API's problem,
// at the API's status.
func answered[T any](u *UI, w http.ResponseWriter, r *http.Request, page string, data map[string]any, res apiAnswer[T], err error) *T {
	if err != nil {
		u.fail(w, r, err)
		return nil
	}
	if v := res.GetJSON200(); v != nil {
		return v
	}
	data["Error"] = problemText(res.GetApplicationproblemJSONDefault(), res.GetBody())
	u.render(w, r, page, res.StatusCode(), data)
	return nil
}

// render executes page (or, for an htmx request that names a fragment, only
// that fragment) with data.
func (u *UI) render(w http.ResponseWriter, r *http.Request, page string, status int, data map[string]any) {
	t, ok := u.pages[page]
	if !ok {
		u.fail(w, r, fmt.Errorf("no template %q", page))
		return
	}
	data["Viewer"] = viewerOf(r.Context())
	data["Page"] = page
	data["HasFlags"] = u.cfg.Flags != nil
	name := "layout"
	if frag := r.Header.Get("HX-Target"); frag != "" && t.Lookup(frag) != nil {
		name = frag
	}
	var b strings.Builder
	if err := t.ExecuteTemplate(&b, name, data); err != nil {
		u.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(b.String()))
}
