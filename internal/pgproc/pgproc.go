// Package pgproc runs a private PostgreSQL server: initdb into a temporary
// directory, a free loopback port, trust authentication, fsync off. It is
// for tests and benchmarks that must stop, restart or crash their database
// without touching a shared one (internal/testenv.PrivatePostgres wraps it
// for tests; `graft bench -scenario chaos` uses it directly).
//
// It imports nothing of graft's.
package pgproc

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Server is a private PostgreSQL server.
type Server struct {
	// URL is the DSN of its "postgres" database, with binary_parameters.
	URL string
	// Port is the loopback port it listens on.
	Port int

	dir  string
	bin  string
	cred *credential // the postgres user's, when run as root

	// guard stops the server and removes its files once this process
	// ends (startGuard); guardW is the pipe end only this process holds.
	guard  *exec.Cmd
	guardW *os.File
}

// Config tunes a Server. The zero value is fine.
type Config struct {
	// MaxConnections is the server's max_connections. Default 200.
	MaxConnections int
}

// Start initialises and starts a server. The binaries are taken from
// GRAFT_PG_BIN, else the newest /usr/lib/postgresql/*/bin, else PATH. Run as
// root, the server runs as the postgres user (initdb refuses root). Close
// stops it and removes its files; so does the end of this process, however
// it ends (see orphans.go). Start first stops and removes the servers
// whose owner process is dead.
func Start(cfg Config) (s *Server, err error) {
	if s, err = newServer(); err != nil {
		return nil, err
	}
	reapOrphans(s.bin, s.cred)
	if s.dir, err = os.MkdirTemp("", dirPrefix); err != nil {
		return nil, err
	}
	// srv, not s: a failed return sets s to nil before this runs.
	srv := s
	defer func() {
		if err != nil {
			srv.Close()
		}
	}()
	// err, not a new one: the deferred Close must see these fail.
	if err = writeOwner(s.dir); err != nil {
		return nil, err
	}
	if s.cred != nil {
		if err = os.Chown(s.dir, s.cred.uid, s.cred.gid); err != nil {
			return nil, err
		}
	}
	if err = s.startGuard(); err != nil {
		return nil, err
	}
	data := filepath.Join(s.dir, "data")
	out, err := s.command(filepath.Join(s.bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("pgproc: initdb: %w: %s", err, out)
	}
	if s.Port, err = FreePort(); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`
listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = '%s'
max_connections = %d
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 32MB
`, s.Port, s.dir, max(cfg.MaxConnections, 200))
	f, err := os.OpenFile(filepath.Join(data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	_, err = f.WriteString(conf)
	if err = errors.Join(err, f.Close()); err != nil {
		return nil, err
	}
	s.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&binary_parameters=yes", s.Port)
	return s, s.Start()
}

// newServer is a Server with no directory yet: the binaries to run and the
// user to run them as.
func newServer() (*Server, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("pgproc: running as root, a private PostgreSQL needs the postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &credential{uid: uid, gid: gid}
	}
	return s, nil
}

// Start starts the server (again) and waits until it accepts connections.
func (s *Server) Start() error {
	if err := s.pgCtl("start", "-w", "-t", "60", "-l", filepath.Join(s.dir, "log")); err != nil {
		return fmt.Errorf("%w; log:\n%s", err, s.Log())
	}
	return nil
}

// Stop shuts the server down the way a restart or a failover does: open
// sessions are terminated and in-flight transactions rolled back.
func (s *Server) Stop() error { return s.pgCtl("stop", "-m", "fast", "-w", "-t", "60") }

// Crash kills the server without a shutdown checkpoint, as a power cut
// would; Start recovers it from its WAL.
func (s *Server) Crash() error { return s.pgCtl("stop", "-m", "immediate", "-w", "-t", "60") }

// Restart stops and starts the server.
func (s *Server) Restart() error {
	if err := s.Stop(); err != nil {
		return err
	}
	return s.Start()
}

// Close stops the server at once and removes its files.
func (s *Server) Close() {
	if s.dir == "" {
		return
	}
	_ = s.pgCtl("stop", "-m", "immediate", "-w")
	if s.guard != nil {
		_ = s.guardW.Close()
		_ = s.guard.Wait()
	}
	_ = os.RemoveAll(s.dir)
}

// DataDir is the server's data directory (its postmaster.pid is there).
func (s *Server) DataDir() string { return filepath.Join(s.dir, "data") }

// Log is the tail of the server's log, for failure messages.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func (s *Server) pgCtl(args ...string) error {
	args = append([]string{"-D", filepath.Join(s.dir, "data")}, args...)
	out, err := s.command(filepath.Join(s.bin, "pg_ctl"), args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgproc: pg_ctl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = s.dir
	if s.cred != nil {
		s.cred.apply(cmd)
	}
	return cmd
}

// binDir finds the directory of initdb and pg_ctl.
func binDir() (string, error) {
	if d := os.Getenv("GRAFT_PG_BIN"); d != "" {
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgMajor(dirs[i]) > pgMajor(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	path, err := exec.LookPath("initdb")
	if err != nil {
		return "", errors.New("pgproc: a private PostgreSQL needs initdb and pg_ctl: set GRAFT_PG_BIN or install postgresql")
	}
	return filepath.Dir(path), nil
}

// pgMajor is the version number in /usr/lib/postgresql/<n>/bin.
func pgMajor(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

// FreePort returns a loopback TCP port nothing listens on at the moment.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
