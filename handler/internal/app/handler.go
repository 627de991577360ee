package app

import (
	"encoding/json"
	"net/http"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/aoai-failover/gateway/handler/internal/apierr"
	"github.com/aoai-failover/gateway/handler/internal/proxy"
	"github.com/aoai-failover/gateway/handler/internal/state"
)

// HealthPath answers Front Door's health probe; the infra template's probe uses the same path
// (the template test reads it from `handler -check`).
const HealthPath = "/healthz"

// handler routes the gateway's own paths and sends everything else to the forwarder, after the
// Front Door check and caller authentication.
func (g *gateway) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer g.recoverPanic(w, r)
		switch r.URL.Path {
		case "/", HealthPath, "/status":
			// The gateway's own answers carry the same headers as forwarded ones.
			w.Header().Set("X-Served-By", "none")
			w.Header().Set("X-Gateway-Attempts", "0")
		}
		switch r.URL.Path {
		case "/":
			// The Functions host pings this until the handler is ready.
			if r.Method == http.MethodGet || r.Method == http.MethodHead {
				w.WriteHeader(http.StatusOK)
				return
			}
		case HealthPath:
			g.healthz(w, r)
			return
		}
		if rej := g.front.Check(r); rej != nil {
			rej.Write(w)
			return
		}
		if g.cors.preflight(w, r) {
			return // browsers send preflights without credentials
		}
		g.cors.mark(w, r)
		realtime := proxy.IsRealtimePath(r.URL.Path)
		if realtime {
			proxy.TakeRealtimeCredentials(r) // a browser's key, from the query or a subprotocol
		}
		app, rej := g.callers.Authenticate(r)
		if rej != nil {
			rej.Write(w)
			return
		}
		if r.URL.Path == "/status" {
			g.status(w, r)
			return
		}
		if realtime {
			g.proxy.ServeRealtime(w, r, app)
			return
		}
		g.proxy.Serve(w, r, app)
	})
}

// recoverPanic turns a bug into a 500 and one error line instead of a dead connection. The
// forwarder's deliberate abort of a broken committed response is passed on untouched.
func (g *gateway) recoverPanic(w http.ResponseWriter, r *http.Request) {
	v := recover()
	if v == nil {
		return
	}
	if v == http.ErrAbortHandler {
		panic(v)
	}
	g.log.Error("panic serving request", "path", r.URL.Path, "panic", v, "stack", string(debug.Stack()))
	apierr.New(http.StatusInternalServerError, "InternalServerError", "the gateway failed while handling the request").Write(w)
}

// healthz is Front Door's probe: 200 while this instance can serve, 503 otherwise.
func (g *gateway) healthz(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		apierr.New(http.StatusMethodNotAllowed, "MethodNotAllowed", "use GET or HEAD").Write(w)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "application/json")
	ready := g.ready()
	status := http.StatusOK
	if !ready {
		status = http.StatusServiceUnavailable
	}
	w.WriteHeader(status)
	if r.Method == http.MethodGet {
		_ = json.NewEncoder(w).Encode(map[string]any{"status": map[bool]string{true: "ok", false: "unavailable"}[ready], "instance": g.instance})
	}
}

// status reports every target's state and the store's health as JSON.
func (g *gateway) status(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		apierr.New(http.StatusMethodNotAllowed, "MethodNotAllowed", "use GET").Write(w)
		return
	}
	now := time.Now()
	if wantsHTML(r) {
		g.statusHTML(w, now)
		return
	}
	byID := g.snapshot(now)
	type entry struct {
		Priority int    `json:"priority"`
		Weight   int    `json:"weight"`
		Region   string `json:"region,omitempty"`
		State    any    `json:"state"`
	}
	deployments := map[string][]entry{}
	for _, name := range g.planner.Names() {
		for _, group := range g.planner.Groups(name) {
			for _, t := range group {
				deployments[name] = append(deployments[name], entry{Priority: t.Priority, Weight: t.Weight, Region: t.Region, State: byID[t.ID]})
			}
		}
	}
	store := g.view.Health()
	var mem runtime.MemStats
	runtime.ReadMemStats(&mem)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	doc := map[string]any{
		"instance":    g.instance,
		"time":        now.UTC(),
		"uptime":      now.Sub(g.started).Round(time.Second).String(),
		"store":       map[string]any{"kind": g.store, "shared": store.Shared, "healthy": store.Healthy, "lastError": store.LastError, "lastSync": store.LastSync},
		"deployments": deployments,
		"runtime":     map[string]any{"goroutines": runtime.NumGoroutine(), "heapMiB": mem.HeapInuse >> 20, "inFlight": g.proxy.InFlight()},
		"instances":   len(g.view.Others()) + 1,
	}
	if q := g.proxy.Queued(); len(q) > 0 {
		doc["queued"] = q // requests in each logical deployment's admission wait, on this instance
	}
	// Each app's consumption in the budget window: this instance's, and for apps with a
	// budget the fleet's (its own plus what the others last published) and what is left.
	doc["apps"] = map[string]any{"window": g.budgets.Window().String(), "apps": g.budgets.Status(now)}
	_ = enc.Encode(doc)
}

// snapshot is every target's state by id, as routing sees it: a target whose low remaining
// budget the planner would pass over shows "deprioritised" only while throttle.routeByRemaining
// is on; with it off, the planner ignores the budget and so does the state.
func (g *gateway) snapshot(now time.Time) map[string]state.TargetStatus {
	byRemaining := g.settings.Routing.Throttle.RouteByRemainingOrDefault()
	byID := map[string]state.TargetStatus{}
	for _, s := range g.view.Snapshot(now) {
		if s.State == state.StateDeprioritised && !byRemaining {
			s.State, s.DeprioritisedUntil = state.StateAvailable, nil
		}
		byID[s.Target] = s
	}
	return byID
}

// ready: every logical deployment has at least one target with a credential to call it with.
func (g *gateway) ready() bool {
	for _, name := range g.planner.Names() {
		ok := false
		for _, group := range g.planner.Groups(name) {
			for _, t := range group {
				ok = ok || g.creds.Has(t.Account)
			}
		}
		if !ok {
			return false
		}
	}
	keysReady := g.callers.Keys != nil && g.callers.Keys.Loaded()
	entraReady := g.callers.Entra != nil && g.callers.Entra.Ready()
	if !g.callers.Anonymous && !keysReady && !entraReady {
		return false // no caller could be let in yet
	}
	return len(g.planner.Names()) > 0
}
