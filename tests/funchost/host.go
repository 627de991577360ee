// Package funchost is a small stand-in for the Azure Functions host running a custom handler
// with customHandler.enableProxyingHttpRequest: true, so that tests can run the packaged app
// (host.json, function/, bin/handler) the way Azure runs it, offline and in a few milliseconds.
//
// It is written from the host's own source (github.com/Azure/azure-functions-host, the custom
// handler code under src/WebJobs.Script/Workers/Http/ and the YARP forwarder it uses,
// github.com/microsoft/reverse-proxy src/ReverseProxy/Forwarder/), not copied from it: each
// piece names the file whose behaviour it follows. What it models and what it leaves out is
// listed in tests/README.md ("The Functions host stand-in"). `func start` (Core Tools) remains
// the real thing.
package funchost

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Options says which app to run and how.
type Options struct {
	// AppDir is the function app's folder: host.json, a folder per function with its
	// function.json, and the handler executable host.json names.
	AppDir string
	// Env is the host's environment, app settings included; the handler inherits it, plus the
	// variables the host adds (FUNCTIONS_CUSTOMHANDLER_PORT and the others).
	Env []string
	// Log receives the host's own log lines, the handler's output among them; nil discards them.
	Log io.Writer
	// HandlerStdout and HandlerStderr receive the handler's output lines as written.
	HandlerStdout, HandlerStderr io.Writer
	// Addr is where the host listens; default 127.0.0.1:0.
	Addr string
	// Overrides of host.json and the host's defaults, for tests; zero keeps them.
	// FunctionTimeout -1 means none.
	InitializationTimeout time.Duration
	FunctionTimeout       time.Duration
	ActivityTimeout       time.Duration
}

// Host is a running stand-in host.
type Host struct {
	// URL is where callers reach the function app, e.g. http://127.0.0.1:41234.
	URL string

	opts            Options
	app             *app
	initTimeout     time.Duration
	functionTimeout time.Duration // 0: none
	activityTimeout time.Duration
	port            int
	grace           time.Duration
	srv             *http.Server
	transport       *http.Transport // to the handler, as DefaultHttpProxyService's SocketsHttpHandler
	pingTransport   *http.Transport

	mu         sync.Mutex
	state      dispatcherState
	changed    chan struct{}
	cur        *worker
	starts     int
	errorTimes []time.Time
	stopped    chan struct{}
	stopOnce   sync.Once
	logMu      sync.Mutex
}

// gracePeriod is TimeoutAttribute.GracePeriod's default (2 s) in the WebJobs SDK, which the
// host's function timeout uses (src/WebJobs.Script/CustomAttributeBuilderUtility.cs sets only
// ThrowOnTimeout and TimeoutWhileDebugging). A variable so that this package's tests can
// shorten it.
var gracePeriod = 2 * time.Second

// Start reads the app, listens, and starts the handler. Like the host, it accepts requests at
// once: an invocation that arrives before the handler answers its ping waits for it.
func Start(opts Options) (*Host, error) {
	a, err := readApp(opts.AppDir, opts.Env)
	if err != nil {
		return nil, err
	}
	h := &Host{opts: opts, app: a, initTimeout: a.initializationTimeout, functionTimeout: a.functionTimeout,
		activityTimeout: defaultActivityTimeout, grace: gracePeriod, changed: make(chan struct{}), stopped: make(chan struct{})}
	if opts.InitializationTimeout > 0 {
		h.initTimeout = opts.InitializationTimeout
	}
	switch {
	case opts.FunctionTimeout > 0:
		h.functionTimeout = opts.FunctionTimeout
	case opts.FunctionTimeout < 0:
		h.functionTimeout = 0
	}
	if opts.ActivityTimeout > 0 {
		h.activityTimeout = opts.ActivityTimeout
	}
	// HttpWorkerOptionsSetup.GetPort: customHandler.port, else WorkerUtilities.GetUnusedTcpPort
	// (bind 127.0.0.1:0, read the port, close), once for the host's lifetime.
	h.port = a.port
	if h.port == 0 {
		h.port = freePort()
	}
	// SocketsHttpHandler { AllowAutoRedirect = false, UseCookies = false }: no redirects, no
	// cookies, no decompression, pooled connections (idle ones closed after a minute), HTTP/1.1
	// to http://127.0.0.1 (the requested 2.0 with RequestVersionOrLower is never negotiated
	// without TLS).
	h.transport = &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 15 * time.Second}).DialContext,
		DisableCompression:  true,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     time.Minute,
	}
	h.pingTransport = &http.Transport{Proxy: nil, DisableCompression: true, DisableKeepAlives: true}
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	h.URL = "http://" + ln.Addr().String()
	h.srv = &http.Server{Handler: h, ReadHeaderTimeout: 30 * time.Second}
	go func() { _ = h.srv.Serve(ln) }()
	h.logf("Host started on %s; functions: %s", h.URL, h.functionNames())
	go h.startWorker() // HttpFunctionInvocationDispatcher.InitializeAsync: not awaited
	return h, nil
}

func (h *Host) functionNames() string {
	s := ""
	for i, f := range h.app.functions {
		if i > 0 {
			s += ", "
		}
		s += f.name + " (" + "/" + joinRoute(f.route) + ")"
	}
	return s
}

func joinRoute(r []string) string {
	s := ""
	for i, p := range r {
		if i > 0 {
			s += "/"
		}
		s += p
	}
	return s
}

// WaitReady waits until the dispatcher is Initialized (the handler answered its ping).
func (h *Host) WaitReady(ctx context.Context) error {
	for {
		h.mu.Lock()
		st, changed := h.state, h.changed
		h.mu.Unlock()
		switch st {
		case stateInitialized:
			return nil
		case stateStopped:
			return errors.New("funchost: the host stopped")
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("funchost: handler not ready (state %s): %w", st, ctx.Err())
		}
	}
}

// State is the dispatcher's state: Initializing, Initialized, WorkerProcessRestarting, Stopped.
func (h *Host) State() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.state.String()
}

// Starts is how many times the host has started the handler.
func (h *Host) Starts() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.starts
}

// HandlerPID is the current handler process's id, 0 if none runs.
func (h *Host) HandlerPID() int {
	h.mu.Lock()
	w := h.cur
	h.mu.Unlock()
	if w == nil || w.cmd == nil || w.cmd.Process == nil {
		return 0
	}
	select {
	case <-w.exited:
		return 0
	default:
		return w.cmd.Process.Pid
	}
}

// Stopped is closed once the host has stopped itself (the handler failed three times within
// 30 minutes, or never became ready) or was closed.
func (h *Host) Stopped() <-chan struct{} { return h.stopped }

// Close stops the host the way the host's shutdown disposes the channel: the handler is killed
// (Process.Kill, SIGKILL), not asked to stop.
func (h *Host) Close() {
	h.stop()
	h.srv.Close()
	h.transport.CloseIdleConnections()
}

// stop is IApplicationLifetime.StopApplication: no more handler starts, the handler is killed,
// the listener closes once the requests in flight are answered (5 s at most here).
func (h *Host) stop() {
	h.stopOnce.Do(func() {
		h.mu.Lock()
		h.setState(stateStopped)
		cur := h.cur
		h.mu.Unlock()
		close(h.stopped)
		if cur != nil {
			cur.dispose()
		}
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = h.srv.Shutdown(ctx)
			h.srv.Close()
		}()
		h.logf("Host stopped")
	})
}

func (h *Host) logf(format string, args ...any) {
	if h.opts.Log == nil {
		return
	}
	h.logMu.Lock()
	defer h.logMu.Unlock()
	fmt.Fprintf(h.opts.Log, time.Now().Format("15:04:05.000")+" funchost: "+format+"\n", args...)
}
