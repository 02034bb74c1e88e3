package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/internal/testenv"
	"github.com/graftdev/graft/tasks/api"
	"github.com/graftdev/graft/tasks/ui"
)

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key
// into dir, and returns their paths and the certificate.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, cert *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "graft test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err = x509.ParseCertificate(der)
	require.NoError(t, err)
	kb, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	certFile, keyFile = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
	return certFile, keyFile, cert
}

// signInCookie signs in to the web UI at base with a new operator token of
// schema and returns the session cookie the server set, and the page the
// sign-in led to.
func signInCookie(t *testing.T, c *http.Client, base, schema string) (*http.Cookie, string) {
	t.Helper()
	out, err := run(t, "tokens", "create", "--direct", "--schema", schema, "--name", "tls-lead", "--role", "operator", "-o", "json")
	require.NoError(t, err, out)
	var tok api.CreatedToken
	require.NoError(t, json.Unmarshal([]byte(out), &tok), out)
	var session *http.Cookie
	c.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
		for _, ck := range req.Response.Cookies() {
			if ck.Name == ui.SessionCookie {
				session = ck
			}
		}
		return nil
	}
	res, err := c.PostForm(base+"/ui/signin", url.Values{"token": {tok.Secret}})
	require.NoError(t, err)
	defer res.Body.Close()
	_, err = io.ReadAll(res.Body)
	require.NoError(t, err)
	require.Equal(t, 200, res.StatusCode)
	require.NotNil(t, session, "signing in sets the session cookie")
	return session, res.Request.URL.Path
}

// TestServerServesHTTPS: with --tls-cert and --tls-key graft server speaks
// HTTPS only; an operator signs in to the web UI over it, and the session
// cookie is Secure.
func TestServerServesHTTPS(t *testing.T) {
	schema := testenv.Schema(t)
	certFile, keyFile, cert := selfSigned(t, t.TempDir())
	base := startServer(t, schema, "--no-redis", "--ui-secret", strings.Repeat("s", 32), "--tls-cert", certFile, "--tls-key", keyFile)
	require.True(t, strings.HasPrefix(base, "https://"), base)

	roots := x509.NewCertPool()
	roots.AddCert(cert)
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	c := &http.Client{Jar: jar, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}
	session, page := signInCookie(t, c, base, schema)
	require.True(t, session.Secure, "over TLS the session cookie is Secure")
	require.True(t, session.HttpOnly)
	require.Equal(t, "/ui/operations", page, "signed in over HTTPS")

	res, err := http.Get("http" + strings.TrimPrefix(base, "https") + "/healthz")
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusBadRequest, res.StatusCode, "plain HTTP is not served on the TLS port")
}

// TestServerBehindTLSProxy: --behind-tls-proxy (or behind_tls_proxy in the
// configuration file) marks the session cookie Secure on plain HTTP; without
// it, a plain HTTP sign-in sets a cookie that is not.
func TestServerBehindTLSProxy(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "graft.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("behind_tls_proxy: true\n"), 0o600))
	for _, tc := range []struct {
		name   string
		args   []string
		secure bool
	}{
		{"flag", []string{"--behind-tls-proxy"}, true},
		{"config file", []string{"--config", cfg}, true},
		{"neither", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			schema := testenv.Schema(t)
			base := startServer(t, schema, append([]string{"--no-redis", "--ui-secret", strings.Repeat("s", 32)}, tc.args...)...)
			session, _ := signInCookie(t, &http.Client{}, base, schema)
			require.Equal(t, tc.secure, session.Secure)
		})
	}
}

// TestServerTLSOptionsRefused: half a certificate, or files that are none,
// are refused at start-up with the flags named.
func TestServerTLSOptionsRefused(t *testing.T) {
	dir := t.TempDir()
	certFile, _, _ := selfSigned(t, dir)
	schema := testenv.Schema(t)
	_, err := run(t, "server", "--addr", "127.0.0.1:0", "--schema", schema, "--no-redis", "--tls-cert", certFile)
	require.ErrorContains(t, err, "graft server: --tls-cert and --tls-key (tls.cert and tls.key in --config) go together; give both or neither")
	_, err = run(t, "server", "--addr", "127.0.0.1:0", "--schema", schema, "--no-redis", "--tls-cert", certFile, "--tls-key", certFile)
	require.ErrorContains(t, err, "graft server: --tls-cert "+certFile+" / --tls-key "+certFile+": tls:")
}
