package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/graftdev/graft/internal/pgproc"
)

// redisProc is a private redis-server without persistence, so that a
// restart loses everything, as a Redis restarted without persistence does.
type redisProc struct {
	dir  string
	port int
	cmd  *exec.Cmd
	URL  string
}

func startRedis(dir string) (*redisProc, error) {
	port, err := pgproc.FreePort()
	if err != nil {
		return nil, err
	}
	r := &redisProc{dir: dir, port: port, URL: fmt.Sprintf("redis://127.0.0.1:%d/0", port)}
	return r, r.start()
}

func (r *redisProc) start() error {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return errors.New("bench: the chaos scenario needs redis-server on PATH")
	}
	r.cmd = exec.Command(bin, "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--dir", r.dir, "--daemonize", "no", "--loglevel", "warning")
	logf, err := os.OpenFile(filepath.Join(r.dir, "redis.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	if err := r.cmd.Start(); err != nil {
		return err
	}
	opts, _ := redis.ParseURL(r.URL)
	c := redis.NewClient(opts)
	defer c.Close()
	for end := time.Now().Add(10 * time.Second); ; {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(end) {
			return fmt.Errorf("bench: private redis-server did not answer: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// restart kills the server and starts an empty one on the same port.
func (r *redisProc) restart() error {
	r.kill()
	return r.start()
}

func (r *redisProc) kill() {
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
	}
}

// chaosWorkerProc is one worker subprocess: this binary re-run as
// `graft bench -scenario chaos-worker`.
type chaosWorkerProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	ready chan struct{}
	done  chan struct{}
	// reports are the lines the worker printed after "ready" (a basic
	// worker's -stats counters, see workerStats); read them after done.
	reports []string
}

func spawnChaosWorker(env []string, stderr io.Writer) (*chaosWorkerProc, error) {
	return spawnWorker("chaos-worker", env, stderr)
}

// spawnWorker re-runs this binary as `graft bench -scenario <scenario>`, a
// worker process that prints "ready" once it claims work and stops when its
// stdin closes.
func spawnWorker(scenario string, env []string, stderr io.Writer, args ...string) (*chaosWorkerProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, append([]string{"bench", "-scenario", scenario}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &chaosWorkerProc{cmd: cmd, stdin: stdin, ready: make(chan struct{}), done: make(chan struct{})}
	go func() {
		var once sync.Once
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			if s.Text() == "ready" {
				once.Do(func() { close(p.ready) })
			} else {
				p.reports = append(p.reports, s.Text())
			}
		}
		_ = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// kill sends SIGKILL: no deferred code runs in the worker.
func (p *chaosWorkerProc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// stop asks the worker to stop (its stdin closes) and kills it if it has
// not within the timeout.
func (p *chaosWorkerProc) stop(timeout time.Duration) {
	_ = p.stdin.Close()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.kill()
	}
}
