// Package app wires the gateway together: it loads the settings, builds the clients and the
// state view, serves HTTP until its context ends, and shuts down gracefully.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"golang.org/x/net/http/httpproxy"

	"github.com/aoai-failover/gateway/handler/internal/auth"
	"github.com/aoai-failover/gateway/handler/internal/budget"
	"github.com/aoai-failover/gateway/handler/internal/config"
	"github.com/aoai-failover/gateway/handler/internal/proxy"
	"github.com/aoai-failover/gateway/handler/internal/route"
	"github.com/aoai-failover/gateway/handler/internal/secrets"
	"github.com/aoai-failover/gateway/handler/internal/server"
	"github.com/aoai-failover/gateway/handler/internal/state"
	"github.com/aoai-failover/gateway/handler/internal/telemetry"
)

// Env is what the process gets from its surroundings.
type Env struct {
	Getenv func(string) string
	Stdout io.Writer
	Stderr io.Writer
	// OnListen, if set, is told the address once the gateway accepts connections.
	OnListen func(addr net.Addr)
}

// Run runs the gateway until ctx ends (SIGTERM), then drains in-flight requests within the
// shutdown timeout and flushes state. A configuration problem is returned before anything listens.
func Run(ctx context.Context, env Env) error {
	// Request lines are batched (flushed every 100 ms and at exit); warnings go out at once.
	stdout := telemetry.NewBufferedWriter(env.Stdout, 64<<10, 100*time.Millisecond)
	defer stdout.Close()
	log := telemetry.NewLogger(stdout, env.Stderr, slog.LevelInfo)
	telemetry.CaptureStdLog(log)
	out := telemetry.Output{Out: stdout, Err: env.Stderr}
	p, err := prepare(ctx, env.Getenv, log)
	if err != nil {
		return err // every problem, the list `handler -check` reports
	}
	settings, creds, vault, store, otel := p.settings, p.creds, p.vault, p.store, p.otel
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = otel.Shutdown(sctx) // exports what is left
	}()
	for _, w := range settings.Warnings {
		log.Warn(w)
	}
	if vault != nil {
		loadVault(ctx, vault, settings.Routing.KeyVault, p.vaultSecrets, log)
	}
	if p.table != nil {
		ensureTable(ctx, p.table, settings, log)
	}
	g, err := build(settings, creds, vault, store, log, out, otel, env.Getenv)
	if err != nil {
		return err
	}
	bg, stopBackground := context.WithCancel(context.Background())
	defer stopBackground()
	if vault != nil {
		go vault.Run(bg)
	}
	if g.callers.Entra != nil {
		go g.callers.Entra.Run(bg)
	}
	ln, err := net.Listen("tcp", settings.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", settings.Addr, err)
	}
	return g.serve(ctx, ln, env.OnListen)
}

type gateway struct {
	settings *config.Settings
	log      *slog.Logger
	planner  *route.Planner
	view     *state.View
	budgets  *budget.Budgets
	owners   *state.Owners
	proxy    *proxy.Gateway
	front    auth.FrontDoor
	callers  auth.Callers
	cors     *cors
	instance string
	started  time.Time
	store    string
	creds    *secrets.Credentials
}

// clockSkew is how far instances' clocks may differ: a mark is absolute UTC time, so another
// instance frees a target that much earlier or later. NTP keeps Azure hosts within a second.
const clockSkew = 5 * time.Second

// prepared is what a start builds from the settings before it contacts anything.
type prepared struct {
	settings     *config.Settings
	creds        *secrets.Credentials
	vault        *secrets.VaultKeys // nil when no Key Vault secret is named
	vaultSecrets int
	store        sharedStore
	table        *state.TableStore // nil: per-instance state
	otel         telemetry.OTel
}

// prepare is the whole of a start that contacts nothing: it reads and validates the settings
// (config.Load) and builds every client from them. `handler -check` runs it too, so the check
// and the start cannot disagree; whatever fails is returned as one list of every problem
// (config.Problems). Only what needs the network (Key Vault, the table, the listening port) is
// left to the start.
func prepare(ctx context.Context, getenv func(string) string, log *slog.Logger) (*prepared, error) {
	settings, err := config.Load(getenv)
	if err != nil {
		return nil, err
	}
	p := &prepared{settings: settings}
	var probs config.Problems
	identity := &processIdentity{clientID: settings.ClientID}
	if p.creds, p.vault, p.vaultSecrets, err = newCredentials(settings, identity, log, getenv); err != nil {
		probs = append(probs, err.Error())
	}
	if p.store, p.table, err = newStore(settings, identity); err != nil {
		probs = append(probs, err.Error())
	}
	if p.otel, err = telemetry.OpenTelemetry(ctx, getenv, instanceName(getenv)); err != nil {
		probs = append(probs, err.Error())
	}
	if len(probs) > 0 {
		p.discard()
		return nil, probs
	}
	return p, nil
}

// discard lets go of what prepare built without contacting anything: OpenTelemetry is stopped
// with a context that has already ended, so nothing is exported.
func (p *prepared) discard() {
	if p.otel.Shutdown == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = p.otel.Shutdown(ctx)
}

// newCredentials builds every account's credential source, and the Key Vault client (nil when
// no secret is named) with the number of secrets it reads.
func newCredentials(s *config.Settings, identity *processIdentity, log *slog.Logger, getenv func(string) string) (*secrets.Credentials, *secrets.VaultKeys, int, error) {
	r := s.Routing
	env, err := secrets.NewEnvKeys(r.Accounts, getenv)
	if err != nil {
		return nil, nil, 0, err
	}
	var names []string
	seen := map[string]bool{}
	needIdentity := false
	if n := clientKeysSecret(r); n != "" {
		seen[n], needIdentity = true, true
		names = append(names, n)
	}
	for _, a := range r.Accounts {
		if n := a.Auth.KeyVaultSecret; n != "" && !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
		needIdentity = needIdentity || a.Auth.ManagedIdentity || a.Auth.KeyVaultSecret != ""
	}
	var cred azcore.TokenCredential
	if needIdentity {
		if cred, err = identity.get(); err != nil {
			return nil, nil, 0, err
		}
	}
	var vault *secrets.VaultKeys
	if len(names) > 0 {
		if vault, err = secrets.NewVaultKeys(r.KeyVault, cred, names, r.Secrets.Refresh.D(), log); err != nil {
			return nil, nil, 0, err
		}
	}
	return secrets.NewCredentials(r.Accounts, env, vault, cred), vault, len(names), nil
}

// loadVault reads the Key Vault secrets at start, all at once. A vault that cannot be reached
// does not stop the start: /healthz says 503 until every logical deployment has a target with a
// credential, and reading is retried.
func loadVault(ctx context.Context, vault *secrets.VaultKeys, url string, n int, log *slog.Logger) {
	// A short wait: a vault that answers gives the first requests their keys; one that does
	// not must not keep the process from answering the host's readiness ping.
	lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := vault.Load(lctx); err != nil {
		log.Warn("Key Vault not readable at start; targets without a key are skipped until it is", "vault", url, "error", err)
	} else {
		log.Info("read backend keys from Key Vault", "vault", url, "secrets", n)
	}
}

func clientKeysSecret(r config.Routing) string {
	if r.Clients == nil {
		return ""
	}
	return r.Clients.KeyVaultSecret
}

// sharedStore is where target state lives: kind names it in /status.
type sharedStore struct {
	state.Store
	kind   string
	shared bool
}

// newStore builds the Table Storage store when one is configured (returned as table too), else
// the in-memory one.
func newStore(s *config.Settings, identity *processIdentity) (sharedStore, *state.TableStore, error) {
	if !s.State.Configured() {
		return sharedStore{Store: state.NewMemoryStore(), kind: "memory"}, nil, nil
	}
	var cred azcore.TokenCredential
	if s.State.TableServiceURI != "" {
		c, err := identity.get()
		if s.State.ClientID != "" && s.State.ClientID != s.ClientID {
			c, err = credential(s.State.ClientID) // the connection names its own identity
		}
		if err != nil {
			return sharedStore{}, nil, fmt.Errorf("%s: no identity to reach the table with: %w", s.State.Setting, err)
		}
		cred = c
	}
	svc, err := state.NewServiceClient(s.State.ConnectionString, s.State.TableServiceURI, cred)
	if err != nil {
		return sharedStore{}, nil, fmt.Errorf("%s: %w", s.State.Setting, err)
	}
	ts := state.NewTableStore(svc, s.State.Table, s.State.Partition)
	return sharedStore{Store: ts, kind: "table", shared: true}, ts, nil
}

// ensureTable creates the state table if it is missing. An unreachable table at start is not
// fatal: the gateway serves on local state and the view keeps trying.
func ensureTable(ctx context.Context, ts *state.TableStore, s *config.Settings, log *slog.Logger) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := ts.EnsureTable(cctx); err != nil {
		log.Warn("state table not reachable at start; serving on local state until it is", "setting", s.State.Setting, "table", s.State.Table, "error", err)
	} else {
		log.Info("sharing target state through Table Storage", "setting", s.State.Setting, "table", s.State.Table, "partition", s.State.Partition)
	}
}

// processIdentity is the one credential of the process, built when first needed and shared:
// azidentity keeps its tokens per credential, so one credential means one cache.
type processIdentity struct {
	clientID string
	cred     azcore.TokenCredential
	err      error
	done     bool
}

func (p *processIdentity) get() (azcore.TokenCredential, error) {
	if !p.done {
		p.cred, p.err = credential(p.clientID)
		if p.err != nil {
			p.err = fmt.Errorf("the gateway's identity: %w", p.err)
		}
		p.done = true
	}
	return p.cred, p.err
}

// credential is the process's identity: the user-assigned managed identity clientID names, else
// the DefaultAzureCredential chain (system-assigned identity in Azure, a developer's login locally).
func credential(clientID string) (azcore.TokenCredential, error) {
	if clientID != "" {
		return azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{ID: azidentity.ClientID(clientID)})
	}
	return azidentity.NewDefaultAzureCredential(nil)
}

func callers(r config.Routing, vault *secrets.VaultKeys, log *slog.Logger) auth.Callers {
	c := auth.Callers{Anonymous: r.Clients != nil && r.Clients.Anonymous}
	if n := clientKeysSecret(r); n != "" {
		c.Keys = &auth.ClientKeys{Source: vault, Secret: n, Log: log}
	}
	if r.Clients != nil && r.Clients.Entra != nil {
		e := r.Clients.Entra
		c.Entra = auth.NewEntra(e.Authority, e.TenantID, e.Audience, e.Roles, log)
	}
	return c
}

func build(s *config.Settings, creds *secrets.Credentials, vault *secrets.VaultKeys, store sharedStore, log *slog.Logger, out telemetry.Output, otel telemetry.OTel, getenv func(string) string) (*gateway, error) {
	r := s.Routing
	planner := route.New(r)
	ids := make([]string, 0, len(planner.Targets()))
	for _, t := range planner.Targets() {
		ids = append(ids, t.ID)
	}
	instance := instanceName(getenv)
	// Every app's consumption is counted (for /status); those with a budget are enforced.
	bopt := budget.Options{Window: config.DefaultBudgetWindow, Apps: map[string]budget.App{}}
	if b := r.Budgets; b != nil {
		bopt.Window = b.Window.D()
		for name, a := range b.Apps {
			bopt.Apps[name] = budget.App{TokensPerMinute: a.TokensPerMinute, Deployments: a.Deployments}
		}
	}
	budgets := budget.New(bopt)
	view := state.NewView(state.Options{
		Targets:         ids,
		Store:           store,
		Shared:          store.shared,
		Instance:        instance,
		CircuitFailures: r.Circuit.Failures,
		CircuitCooldown: r.Circuit.Cooldown.D(),
		Misconfigured:   r.Circuit.Misconfigured.D(),
		ProbeTimeout:    r.Timeouts.Request.D(),
		SyncInterval:    s.State.Refresh,
		// A mark may reach no further than the longest wait the gateway itself would set,
		// plus a few seconds for clocks that differ between instances.
		MaxAhead:      max(r.Throttle.MaxRetryAfter.D(), r.Circuit.Cooldown.D(), r.Circuit.Misconfigured.D()) + clockSkew,
		TokenWindow:   r.Throttle.TokenWindow.D(),
		RequestWindow: r.Throttle.RequestWindow.D(),
		Apps:          budgets,
		Logger:        log,
	})
	var ownerStore state.OwnerStore
	if os, ok := store.Store.(state.OwnerStore); ok && store.shared {
		ownerStore = os
	}
	owners := state.NewOwners(state.OwnersOptions{
		Store: ownerStore, TTL: r.State.OwnerTTL.D(), MaxCached: r.State.MaxCachedOwners, Logger: log,
	})
	popt := proxy.Options{
		Planner:          planner,
		Owners:           owners,
		DefaultLogical:   r.DefaultLogical(),
		State:            view,
		Credentials:      creds,
		Transport:        newTransport(r.Timeouts.Connect.D(), getenv),
		Timeouts:         r.Timeouts,
		Throttle:         r.Throttle,
		MaxBodyBytes:     r.Limits.MaxRequestBodyBytes,
		MaxConcurrent:    r.Limits.MaxConcurrentRequests,
		MaxPendingBodies: r.Limits.MaxPendingBodies,
		MaxEventBytes:    r.Limits.MaxStreamEventBytes,
		RouteByRemaining: r.Throttle.RouteByRemainingOrDefault(),
		Admission:        r.Admission,
		Logger:           log,
		RequestLog:       out,
		Tracer:           otel.Tracer,
		Meter:            otel.Meter,
	}
	popt.Budgets = budgets
	p := proxy.New(popt)
	return &gateway{
		settings: s, log: log, planner: planner, view: view, proxy: p, owners: owners, budgets: budgets,
		front:    auth.FrontDoor{ID: s.FrontDoorID},
		callers:  callers(r, vault, log),
		cors:     newCORS(r.CORS),
		instance: instance, started: time.Now(), store: store.kind, creds: creds,
	}, nil
}

// newTransport returns the client for every backend, with the outbound proxy that HTTPS_PROXY,
// HTTP_PROXY and NO_PROXY name in the process's settings (read through getenv).
func newTransport(connect time.Duration, getenv func(string) string) *http.Transport {
	env := func(upper, lower string) string {
		if v := getenv(upper); v != "" {
			return v
		}
		return getenv(lower)
	}
	cfg := httpproxy.Config{
		HTTPProxy:  env("HTTP_PROXY", "http_proxy"),
		HTTPSProxy: env("HTTPS_PROXY", "https_proxy"),
		NoProxy:    env("NO_PROXY", "no_proxy"),
	}
	var choose func(*http.Request) (*url.URL, error)
	if cfg.HTTPProxy != "" || cfg.HTTPSProxy != "" {
		pick := cfg.ProxyFunc()
		choose = func(r *http.Request) (*url.URL, error) { return pick(r.URL) }
	}
	return proxy.NewTransport(connect, choose)
}

func instanceName(getenv func(string) string) string {
	if id := getenv("WEBSITE_INSTANCE_ID"); id != "" {
		if len(id) > 12 {
			id = id[:12]
		}
		return id
	}
	host, _ := os.Hostname()
	return host + "-" + strconv.Itoa(os.Getpid())
}

func (g *gateway) serve(ctx context.Context, ln net.Listener, onListen func(net.Addr)) error {
	srv := &server.Server{
		Handler:           g.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		Logger:            g.log,
	}
	syncCtx, stopSync := context.WithCancel(context.Background())
	defer stopSync()
	go g.view.Run(syncCtx)
	ownersDone := make(chan struct{})
	go func() { g.owners.Run(syncCtx); close(ownersDone) }()

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	g.log.Info("gateway listening", "addr", ln.Addr().String(), "instance", g.instance,
		"deployments", g.planner.Names(), "targets", len(g.planner.Targets()))
	if onListen != nil {
		onListen(ln.Addr())
	}

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	timeout := g.settings.Routing.Timeouts.Shutdown.D()
	g.log.Info("shutting down: finishing in-flight requests", "timeout", timeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		g.log.Warn("in-flight requests did not finish in time; closing them", "error", err)
		_ = srv.Close()
	}
	stopSync()
	fctx, fcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer fcancel()
	if err := g.view.Flush(fctx); err != nil {
		g.log.Warn("could not flush state at shutdown", "error", err)
	}
	<-ownersDone // Run writes what is pending when it ends
	if err := <-errc; err != nil && !errors.Is(err, server.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	g.log.Info("stopped")
	return nil
}
