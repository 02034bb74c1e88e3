package main

import (
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// registry is a fake domain registry on loopback HTTP. It publishes its
// limits, at most Concurrency calls in flight and PerSecond calls started
// in any calendar second, and enforces them the way registries do: a call
// beyond them is answered 429 with Retry-After, and counted as a
// violation. A few percent of the other calls fail transiently (503).
type registry struct {
	concurrency int
	perSecond   int
	failRate    float64
	url         string
	srv         *http.Server

	mu          sync.Mutex
	inFlight    int
	maxInFlight int
	starts      map[int64]int // calendar second -> calls started in it
	calls       int
	transient   int
	violations  int
	renewed     map[string]int // domain -> renewals
}

// registryStats is what the registry saw.
type registryStats struct {
	Calls, Transient, Violations, MaxInFlight, MaxPerSecond, Renewals, RenewedTwice int
}

func startRegistry(concurrency, perSecond int, failRate float64) (*registry, error) {
	r := &registry{concurrency: concurrency, perSecond: perSecond, failRate: failRate,
		starts: map[int64]int{}, renewed: map[string]int{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/domains/{domain}/{op}", r.serve)
	r.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	r.url = "http://" + ln.Addr().String()
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

func (r *registry) close() { _ = r.srv.Close() }

func (r *registry) serve(w http.ResponseWriter, req *http.Request) {
	if !r.begin() {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "too many requests", http.StatusTooManyRequests)
		return
	}
	time.Sleep(5*time.Millisecond + mrand.N(10*time.Millisecond))
	// The call is over for the registry before the answer is written, so a
	// caller never frees its slot while the registry still counts the call.
	domain, op := req.PathValue("domain"), req.PathValue("op")
	fail := mrand.Float64() < r.failRate
	r.end(domain, op, fail)
	if fail {
		http.Error(w, "registry busy, try again", http.StatusServiceUnavailable)
		return
	}
	var out any
	switch op {
	case "check":
		out = map[string]string{"domain": domain, "status": "active"}
	case "premium":
		out = map[string]any{"premium": strings.HasPrefix(domain, "gold-"), "price": premiumPrice(domain)}
	case "renew":
		out = map[string]string{"domain": domain, "expires": "2028-01-01"}
	default:
		http.Error(w, "unknown operation "+op, http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// begin counts a call's start and says whether it is within the limits.
func (r *registry) begin() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	sec := time.Now().Unix()
	r.calls++
	if r.inFlight >= r.concurrency || r.starts[sec] >= r.perSecond {
		r.violations++
		return false
	}
	r.inFlight++
	r.maxInFlight = max(r.maxInFlight, r.inFlight)
	r.starts[sec]++
	return true
}

func (r *registry) end(domain, op string, failed bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inFlight--
	if failed {
		r.transient++
	} else if op == "renew" {
		r.renewed[domain]++
	}
}

func (r *registry) stats() registryStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := registryStats{Calls: r.calls, Transient: r.transient, Violations: r.violations, MaxInFlight: r.maxInFlight}
	for _, n := range r.starts {
		s.MaxPerSecond = max(s.MaxPerSecond, n)
	}
	for _, n := range r.renewed {
		s.Renewals++
		if n > 1 {
			s.RenewedTwice++
		}
	}
	return s
}

func premiumPrice(domain string) int64 {
	if strings.HasPrefix(domain, "gold-") {
		return 250_00
	}
	return 12_00
}

// registryError is a registry answer that is not a success.
type registryError struct {
	Status     int
	RetryAfter time.Duration
	Body       string
}

func (e *registryError) Error() string {
	return fmt.Sprintf("registry answered %d: %s", e.Status, strings.TrimSpace(e.Body))
}

// call posts one operation to the registry and decodes its answer.
func call(hc *http.Client, req *http.Request, out any) error {
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		e := &registryError{Status: resp.StatusCode, Body: string(body)}
		if s := resp.Header.Get("Retry-After"); s != "" {
			var secs int
			if _, err := fmt.Sscan(s, &secs); err == nil {
				e.RetryAfter = time.Duration(secs) * time.Second
			}
		}
		return e
	}
	return json.Unmarshal(body, out)
}
