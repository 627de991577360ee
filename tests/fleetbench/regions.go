package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aoai-failover/gateway/tests/aoaisim"
)

// hit is one request that reached a region.
type hit struct {
	at       time.Duration // after the run's start
	cost     int
	admitted bool // not answered 429
}

// regionSpec is one simulated region: its quota in tokens per window.
type regionSpec struct {
	name string
	tpm  int
}

// simLatency is how the regions answer: a first token, then per output token, up to completion
// tokens (non-streaming answers come whole, as Azure's do).
type simLatency struct {
	firstToken, perToken time.Duration // already scaled
	completion           int
}

// of is the answer time of a request asking for maxTokens.
func (l simLatency) of(maxTokens int) time.Duration {
	return l.firstToken + time.Duration(min(maxTokens, l.completion))*l.perToken
}

// region is a simulated region behind a recording front: its server listens from the start (so
// gateways can be configured with its URL), its simulator is made fresh by arm when a run's
// trace starts, so every system meets the same budgets at the same offsets.
type region struct {
	spec  regionSpec
	key   string
	cfg   aoaisim.Config
	srv   *httptest.Server
	url   string
	sim   atomic.Pointer[aoaisim.Simulator]
	mu    sync.Mutex
	start time.Time
	hits  []hit
}

const deploymentName = "gpt-4o"

// startRegions starts one server per spec, with Azure's admission rules on the scaled window.
func startRegions(specs []regionSpec, window time.Duration, lat simLatency) ([]*region, error) {
	var out []*region
	for _, sp := range specs {
		key := "fleetbench-key-" + sp.name
		r := &region{spec: sp, key: key, cfg: aoaisim.Config{APIKey: key, Region: sp.name, MaxRecords: -1, Deployments: map[string]aoaisim.Deployment{
			deploymentName: {
				Model: "gpt-4o", TPM: sp.tpm,
				TimeToFirstToken: aoaisim.Duration(lat.firstToken), PerToken: aoaisim.Duration(lat.perToken),
				CompletionTokens: lat.completion,
				Quota:            &aoaisim.Quota{Window: aoaisim.Duration(window), Empty: true},
			},
		}}}
		if err := r.arm(time.Now()); err != nil {
			closeRegions(out)
			return nil, err
		}
		srv := httptest.NewUnstartedServer(r.recorder())
		srv.Config.ErrorLog = discardLog
		srv.Start()
		r.srv, r.url = srv, srv.URL
		out = append(out, r)
	}
	return out, nil
}

func closeRegions(rs []*region) {
	for _, r := range rs {
		r.srv.Close()
	}
}

// arm starts a run: a new simulator, its budgets spent as of now, and an empty log whose times
// count from start.
func (r *region) arm(start time.Time) error {
	sim, err := aoaisim.New(r.cfg)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.start, r.hits = start, nil
	r.mu.Unlock()
	r.sim.Store(sim)
	return nil
}

func (r *region) log() []hit {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]hit(nil), r.hits...)
}

// recorder logs each request's arrival, charge and whether it was admitted, around the
// simulator.
func (r *region) recorder() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		var fields struct {
			MaxTokens int `json:"max_tokens"`
		}
		_ = json.Unmarshal(body, &fields)
		r.mu.Lock()
		i := len(r.hits)
		r.hits = append(r.hits, hit{at: time.Since(r.start), cost: aoaisim.ChargeOf(len(body), fields.MaxTokens), admitted: true})
		r.mu.Unlock()
		sw := &statusWriter{ResponseWriter: w}
		r.sim.Load().ServeHTTP(sw, req)
		if sw.status == http.StatusTooManyRequests {
			r.mu.Lock()
			if i < len(r.hits) {
				r.hits[i].admitted = false
			}
			r.mu.Unlock()
		}
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

var discardLog = log.New(io.Discard, "", 0)

func (r *region) chatURL() string {
	return fmt.Sprintf("%s/openai/deployments/%s/chat/completions?api-version=2024-10-21", r.url, deploymentName)
}
