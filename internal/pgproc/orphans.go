package pgproc

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// pg_ctl daemonises the postmaster, so a server outlives the process that
// started it unless that process stops it: a test binary killed with
// SIGKILL, or ended by -timeout's panic, runs no cleanup, and its server
// would hold its port, memory and files until the machine stops. Two
// things stop it instead:
//
//   - a guard, a shell started with each server that waits for the end of
//     a pipe only the owner holds open, then stops the server and removes
//     its files: the pipe ends with the owner however the owner ends. It
//     runs in a session of its own, so a Ctrl-C to the owner's terminal
//     does not take it down first.
//   - the owner's pid, written in the server's directory: Start stops and
//     removes every server whose owner is dead (its guard killed too, by a
//     signal to the whole session, say). A server whose owner lives is
//     never touched: CI runs many test binaries side by side, each with
//     servers of its own. A directory without an owner yet (being
//     created) is skipped, and so is one whose owner's pid was taken by
//     another process since: it is left, never wrongly stopped.
//   - a directory made before owners were recorded (4cee21d) has none,
//     and would be skipped for good: it is removed once it is older than
//     ownerlessAge and no postmaster runs for it (its postmaster.pid is
//     gone, or names a dead process).

// dirPrefix begins the name of every server's directory under
// os.TempDir().
const dirPrefix = "graft-pg-"

// ownerFile, in a server's directory, holds its owner's pid.
const ownerFile = "owner"

// writeOwner records this process as the owner of the server in dir. The
// file appears whole (renamed into place) so that no Start reads a part.
func writeOwner(dir string) error {
	tmp := filepath.Join(dir, ownerFile+".tmp")
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, ownerFile))
}

// ownerlessAge is how old a server directory without an owner must be
// before it is taken for one made before owners were recorded: Start
// writes the owner right after it makes the directory.
const ownerlessAge = time.Hour

// reapOrphans stops and removes the servers whose owner is dead, and the
// old ownerless directories no postmaster runs for. bin and cred are those
// pg_ctl runs with.
func reapOrphans(bin string, cred *credential) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, ownerFile))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if !ownerlessDead(d) {
				continue
			}
		case err != nil:
			continue
		default:
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil || pid <= 0 || alive(pid) {
				continue
			}
		}
		(&Server{dir: d, bin: bin, cred: cred}).Close()
	}
}

// ownerlessDead reports whether d, a server directory without an owner,
// is older than ownerlessAge and no postmaster runs for it: its
// postmaster.pid is absent or names a process that is not alive. Anything
// it cannot read leaves d alone.
func ownerlessDead(d string) bool {
	fi, err := os.Stat(d)
	if err != nil || time.Since(fi.ModTime()) < ownerlessAge {
		return false
	}
	b, err := os.ReadFile(filepath.Join(d, "data", "postmaster.pid"))
	if errors.Is(err, fs.ErrNotExist) {
		return true
	}
	if err != nil {
		return false
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	return err == nil && pid > 0 && !alive(pid)
}

// startGuard starts the server's guard (see above). Its pipe's write end
// is close-on-exec, so no other child of this process (pg_ctl, the
// postmaster) holds it open.
func (s *Server) startGuard() error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd := s.command("/bin/sh", "-c", `read -r _; "$0" -D "$1" stop -m immediate -w >/dev/null 2>&1; rm -rf "$2"`,
		filepath.Join(s.bin, "pg_ctl"), s.DataDir(), s.dir)
	cmd.Stdin = r
	detach(cmd)
	if err := cmd.Start(); err != nil {
		_ = w.Close()
		return err
	}
	s.guard, s.guardW = cmd, w
	return nil
}
