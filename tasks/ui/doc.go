// Package ui is graft's operator web UI: server-rendered pages (html/template,
// embedded) over the operations API of package tasks/api.
//
// Every page reads and acts through the API's own handler, in process, with
// the signed-in token: the UI has exactly the API's roles (admin, operator,
// viewer, customer), its customer scoping (a customer sees only its own
// operations) and its validation, and every action is audited by the API.
//
// Sign-in takes an API token; the session cookie is HttpOnly, SameSite=Strict
// and Secure when served over TLS (or always, with Config.BehindTLSProxy). Every form that changes something carries
// a CSRF token bound to the session. The Content-Security-Policy allows
// scripts and styles from the UI's origin only (no inline script, no eval).
// The one script is htmx (vendored, static/htmx.min.js), used for live
// updates by polling; every page and form works without JavaScript, and
// live updates have a visible pause control (kept in the URL).
//
// It imports tasks/api (and through it the engine); nothing imports it but
// the server binary.
package ui
