package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// Postgres is a PostgreSQL server of one test's own, for tests that must
// stop, restart or crash the database: the shared server on 5432 is never
// touched. It runs from a temporary data directory on a free loopback port,
// with trust authentication and fsync off, and is stopped and removed when
// the test ends.
type Postgres struct {
	// URL is the DSN of its "postgres" database, in the form of DatabaseURL.
	URL string
	// Port is the loopback port it listens on.
	Port int

	dir  string
	bin  string
	cred *syscall.Credential // the postgres user's, when the test runs as root
}

// PrivatePostgres initialises and starts a private PostgreSQL server. The
// binaries are taken from GRAFT_PG_BIN, else the newest
// /usr/lib/postgresql/*/bin, else PATH. Run as root, the server runs as the
// postgres user (initdb refuses root).
func PrivatePostgres(t testing.TB) *Postgres {
	t.Helper()
	p := &Postgres{bin: pgBin(t)}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		require.NoError(t, err, "running as root: a private PostgreSQL needs the postgres user")
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	dir, err := os.MkdirTemp("", "graft-pg-")
	require.NoError(t, err)
	p.dir = dir
	t.Cleanup(func() {
		_ = p.pgCtl("stop", "-m", "immediate", "-w")
		_ = os.RemoveAll(dir)
	})
	if p.cred != nil {
		require.NoError(t, os.Chown(dir, int(p.cred.Uid), int(p.cred.Gid)))
	}
	data := filepath.Join(dir, "data")
	out, err := p.command(filepath.Join(p.bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8").CombinedOutput()
	require.NoError(t, err, "initdb: %s", out)

	p.Port = freePort(t)
	conf := fmt.Sprintf(`
listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = '%s'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 32MB
`, p.Port, dir)
	f, err := os.OpenFile(filepath.Join(data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString(conf)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	p.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&binary_parameters=yes", p.Port)
	p.Start(t)
	return p
}

// Start starts the server (again) and waits until it accepts connections.
func (p *Postgres) Start(t testing.TB) {
	t.Helper()
	require.NoError(t, p.pgCtl("start", "-w", "-t", "60", "-l", filepath.Join(p.dir, "log")), "start private PostgreSQL; log:\n%s", p.log())
}

// Stop shuts the server down the way a restart or a failover does: open
// sessions are terminated and in-flight transactions rolled back.
func (p *Postgres) Stop(t testing.TB) {
	t.Helper()
	require.NoError(t, p.pgCtl("stop", "-m", "fast", "-w", "-t", "60"), "stop private PostgreSQL")
}

// Crash kills the server without a shutdown checkpoint, as a power cut
// would; Start recovers it from its WAL.
func (p *Postgres) Crash(t testing.TB) {
	t.Helper()
	require.NoError(t, p.pgCtl("stop", "-m", "immediate", "-w", "-t", "60"), "crash private PostgreSQL")
}

// Restart stops and starts the server.
func (p *Postgres) Restart(t testing.TB) {
	t.Helper()
	p.Stop(t)
	p.Start(t)
}

func (p *Postgres) pgCtl(args ...string) error {
	args = append([]string{"-D", filepath.Join(p.dir, "data")}, args...)
	out, err := p.command(filepath.Join(p.bin, "pg_ctl"), args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func (p *Postgres) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = p.dir
	if p.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	}
	return cmd
}

// log is the tail of the server's log, for failure messages.
func (p *Postgres) log() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// pgBin finds the directory of initdb and pg_ctl.
func pgBin(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("GRAFT_PG_BIN"); d != "" {
		return d
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgMajor(dirs[i]) > pgMajor(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d
		}
	}
	path, err := exec.LookPath("initdb")
	require.NoError(t, err, "a private PostgreSQL needs initdb and pg_ctl: set GRAFT_PG_BIN or install postgresql")
	return filepath.Dir(path)
}

// pgMajor is the version number in /usr/lib/postgresql/<n>/bin.
func pgMajor(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

// freePort returns a loopback TCP port nothing listens on at the moment.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
