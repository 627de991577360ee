package funchost

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// excludedHeaders are never copied between the caller and the handler, either way: YARP's
// RequestUtilities._headersToExclude (github.com/microsoft/reverse-proxy,
// src/ReverseProxy/Forwarder/RequestUtilities.cs). Host is not copied either (the
// RequestHeaderOriginalHostTransform that HttpTransformer.Default adds with useOriginalHost
// false); Go keeps it out of Request.Header anyway.
var excludedHeaders = map[string]bool{}

func init() {
	for _, h := range []string{"Connection", "Transfer-Encoding", "Keep-Alive", "Upgrade", "Proxy-Connection",
		"Proxy-Authenticate", "Proxy-Authentication-Info", "Proxy-Authorization", "Proxy-Features",
		"Proxy-Instruction", "Security-Scheme", "ALPN", "Close", "HTTP2-Settings",
		"Upgrade-Insecure-Requests", "TE", "Alt-Svc"} {
		excludedHeaders[http.CanonicalHeaderKey(h)] = true
	}
}

// ServeHTTP is the host's request pipeline for an HTTP-in, HTTP-out function in proxying mode.
func (h *Host) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := kestrelPath(rawPath(r))
	if isHostRoute(path) {
		// The host's own controllers (admin API, extension webhooks) are matched before any
		// function route (src/WebJobs.Script.WebHost/WebJobsApplicationBuilderExtension.cs);
		// they are not modelled here and never reach the handler.
		http.Error(w, "", http.StatusNotFound)
		return
	}
	fn := h.route(path, r.Method)
	if fn == nil {
		if path == "/" { // HomepageMiddleware: no function took "/"
			w.Header().Set("Content-Type", "text/html")
			io.WriteString(w, "<html><body>Your Functions 4.0 app is up and running</body></html>")
			return
		}
		w.WriteHeader(http.StatusNotFound)
		return
	}
	if fn.authLevel != "anonymous" {
		// Function and admin keys are not modelled: a keyed function refuses every caller.
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if r.ContentLength > maxRequestBodySize {
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		return
	}
	// The HTTP trigger binding reads a body that declares a length to the end before the
	// function runs (azure-webjobs-sdk-extensions, HttpTriggerAttributeBindingProvider.BindAsync:
	// IsRequestPayloadReadable, then request.ReadAsStringAsync() with EnableBuffering), so the
	// handler sees nothing until the caller has sent it all. A chunked body is streamed.
	var body []byte
	if r.ContentLength > 0 {
		b, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBodySize+1))
		if err != nil {
			return // the caller left or sent less than it declared
		}
		body = b
	}

	inv := &invocation{id: newUUID(), failed: make(chan struct{}), done: make(chan struct{})}
	if h.functionTimeout > 0 {
		// The WebJobs function timeout (host.json functionTimeout): the invocation's token is
		// cancelled, GracePeriod later a FunctionTimeoutException fails it, and
		// WebScriptHostExceptionHandler.OnTimeoutExceptionAsync waits GracePeriod more for the
		// function's task, then restarts the handler (kills it) if it is still running.
		t := time.AfterFunc(h.functionTimeout+h.grace, func() {
			h.logf("Timeout value of %s exceeded by function invocation %s", h.functionTimeout, inv.id)
			close(inv.failed)
			select {
			case <-inv.done:
			case <-time.After(h.grace):
				h.logf("A function timeout has occurred. Restarting worker process executing invocationId '%s'.", inv.id)
				h.restartForTimeout()
			}
		})
		defer t.Stop()
	}
	wk, err := h.waitInitialized(r.Context())
	if err != nil {
		inv.finish()
		if r.Context().Err() == nil {
			w.WriteHeader(http.StatusInternalServerError)
		}
		return
	}
	h.forward(w, r, wk, inv, path, body)
}

// invocation is one function execution.
type invocation struct {
	id       string
	failed   chan struct{} // closed when the function timeout fails the invocation
	done     chan struct{} // closed when the forwarding to the handler is over
	doneOnce sync.Once
}

func (inv *invocation) finish() { inv.doneOnce.Do(func() { close(inv.done) }) }

// forward is DefaultHttpWorkerService.ProxyInvocationRequest and DefaultHttpProxyService
// (src/WebJobs.Script/Workers/Http/) over YARP's HttpForwarder.SendAsync with
// HttpTransformer.Default (src/ReverseProxy/Forwarder/HttpForwarder.cs, HttpTransformer.cs).
func (h *Host) forward(w http.ResponseWriter, r *http.Request, wk *worker, inv *invocation, path string, body []byte) {
	// YARP's activity token: linked to the caller's connection, cancelled after
	// ActivityTimeout (240 s) without progress, reset by every read and write.
	upCtx, upCancel := context.WithCancel(context.Background())
	stopWatch := context.AfterFunc(r.Context(), upCancel)
	act := newActivity(h.activityTimeout, upCancel)
	cleanup := func() {
		act.stop()
		stopWatch()
		upCancel()
		inv.finish()
	}

	upgrade := isUpgradable(r)
	target := fmt.Sprintf("http://127.0.0.1:%d%s", wk.port, yarpPath(path))
	if r.URL.RawQuery != "" || r.URL.ForceQuery {
		target += "?" + r.URL.RawQuery // QueryString.ToUriComponent: the query as received
	}
	method := r.Method
	if upgrade {
		method = http.MethodGet
	}
	out, err := http.NewRequestWithContext(upCtx, method, target, nil)
	if err != nil {
		cleanup()
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	out.Header = h.requestHeaders(r, inv.id, upgrade)
	var src *startedReader
	switch {
	case upgrade:
	case body != nil:
		src = &startedReader{r: bytes.NewReader(body)}
		out.ContentLength = int64(len(body))
	case r.ContentLength < 0 && len(r.TransferEncoding) > 0:
		src = &startedReader{r: r.Body} // chunked in, chunked out
		out.ContentLength = -1
	}

	type result struct {
		resp *http.Response
		err  error
	}
	results := make(chan result, 1)
	go func() {
		resp, err := h.send(out, src)
		results <- result{resp, err}
	}()
	var res result
	select {
	case res = <-results:
	case <-inv.failed:
		// Failed before the handler answered: ExceptionMiddleware answers 500 while the
		// forwarding goes on in the background until the handler answers or is killed. The
		// request completes normally, so RequestAborted never cancels that forwarding.
		stopWatch()
		go func() {
			if res := <-results; res.resp != nil {
				res.resp.Body.Close()
			}
			cleanup()
		}()
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	if res.err != nil {
		cleanup()
		if r.Context().Err() != nil {
			return // the caller left: logged, not an error
		}
		// YARP sets 502 (or 504 after the activity timeout), then EnsureSuccessfulForwardingAsync
		// throws and the host's ExceptionMiddleware turns the failed invocation into a bare 500.
		kind := "Request (502)"
		if act.expired() {
			kind = "RequestTimedOut (504)"
		}
		h.logf("Failed to proxy request with ForwarderError: %s: %v", kind, res.err)
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	act.reset() // response headers received
	resp := res.resp
	if resp.StatusCode == http.StatusSwitchingProtocols && upgrade {
		h.upgraded(w, resp, act, inv, cleanup)
		return
	}
	defer cleanup()
	defer resp.Body.Close()

	hdr := w.Header()
	for k, vs := range resp.Header {
		if !excludedHeaders[http.CanonicalHeaderKey(k)] {
			hdr[k] = append(hdr[k], vs...)
		}
	}
	if s := resp.StatusCode; (s < 200 || s == 204 || s == 205) && hdr.Get("Content-Length") == "0" {
		hdr.Del("Content-Length")
	}
	h.addCustomHeaders(hdr)
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	_ = rc.Flush()

	// Copy the body as it comes: read up to 64 KiB, write, flush (StreamCopier with Kestrel's
	// response stream, which sends each write; response buffering is disabled).
	chunks := make(chan []byte)
	readErr := make(chan error, 1)
	quit := make(chan struct{})
	defer close(quit)
	go func() {
		buf := make([]byte, 64*1024)
		for {
			n, err := resp.Body.Read(buf)
			if n > 0 {
				act.reset()
				b := append([]byte(nil), buf[:n]...)
				select {
				case chunks <- b:
				case <-quit:
					io.Copy(io.Discard, resp.Body)
					return
				}
			}
			if err != nil {
				readErr <- err
				return
			}
		}
	}()
	for {
		select {
		case b := <-chunks:
			if _, err := w.Write(b); err != nil {
				return // the caller left; the deferred cleanup cancels the handler's request
			}
			if rc.Flush() != nil {
				return
			}
			act.reset()
		case err := <-readErr:
			if err == io.EOF {
				return
			}
			// The handler's answer broke after the response started: YARP resets the caller's
			// connection (ResponseBodyDestination); the caller never sees a clean end.
			h.logf("Failed to proxy request with ForwarderError: ResponseBodyDestination: %v", err)
			panic(http.ErrAbortHandler)
		case <-inv.failed:
			// The function timeout after the response started: ExceptionMiddleware rethrows
			// and Kestrel aborts the connection, which cancels the forwarding.
			upCancel()
			panic(http.ErrAbortHandler)
		}
	}
}

// send is RetryProxyHandler (src/WebJobs.Script/Workers/Http/HttpProxyService/): a request that
// fails to reach the handler is tried again up to 10 attempts in all, 50 ms after the first
// failure, doubling to at most 250 ms (about 1.85 s in all). A body already sent cannot be sent
// again (YARP's StreamCopyHttpContent: "Stream was already consumed."), so that request fails.
func (h *Host) send(req *http.Request, body *startedReader) (*http.Response, error) {
	delay := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		r := req.Clone(req.Context())
		if body != nil {
			r.Body = io.NopCloser(body)
		}
		resp, err := h.transport.RoundTrip(r)
		if err == nil {
			return resp, nil
		}
		if req.Context().Err() != nil || attempt == 10 || (body != nil && body.started.Load()) {
			return nil, err
		}
		h.logf("Failed to proxy request to the worker. Retrying in %dms. Attempt %d of 10. (%v)", delay.Milliseconds(), attempt, err)
		select {
		case <-time.After(delay):
		case <-req.Context().Done():
			return nil, req.Context().Err()
		}
		delay = min(delay*2, 250*time.Millisecond)
	}
}

// startedReader notes whether anything read the body.
type startedReader struct {
	r       io.Reader
	started atomic.Bool
}

func (s *startedReader) Read(p []byte) (int, error) {
	s.started.Store(true)
	return s.r.Read(p)
}

// requestHeaders builds the handler's request headers. The host first sets (replacing any the
// caller sent) X-Azure-Functions-HostVersion and X-Azure-Functions-InvocationId
// (DefaultHttpWorkerService.AddProxyingHeaders) and x-ms-invocation-id
// (DefaultHttpProxyService.StartForwarding, ScriptConstants.HttpProxyCorrelationHeader). YARP then
// copies every header but the excluded ones and Host, and HttpTransformer.Default's X-Forwarded
// transforms (ForwardedTransformActions.Set) replace X-Forwarded-For (the caller's address),
// X-Forwarded-Proto (the scheme), X-Forwarded-Host (the caller's Host) and X-Forwarded-Prefix
// (the path base, empty here, so removed), and remove Forwarded. For an upgrade, the
// Connection and Upgrade headers are put back (HttpForwarder.FixupUpgradeRequestHeaders).
func (h *Host) requestHeaders(r *http.Request, inv string, upgrade bool) http.Header {
	out := http.Header{}
	for k, vs := range r.Header {
		if excludedHeaders[http.CanonicalHeaderKey(k)] || strings.HasPrefix(k, ":") {
			continue
		}
		out[k] = append([]string(nil), vs...)
	}
	out.Set("X-Azure-Functions-HostVersion", hostVersion)
	out.Set("X-Azure-Functions-InvocationId", inv)
	out.Set("x-ms-invocation-id", inv)
	out.Del("X-Forwarded-For")
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if ip := net.ParseIP(host); ip != nil {
			if v4 := ip.To4(); v4 != nil {
				ip = v4
			}
			out.Set("X-Forwarded-For", ip.String())
		}
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	out.Set("X-Forwarded-Proto", scheme)
	out.Del("X-Forwarded-Host")
	if r.Host != "" {
		out.Set("X-Forwarded-Host", r.Host)
	}
	out.Del("X-Forwarded-Prefix")
	out.Del("Forwarded")
	if upgrade {
		out.Set("Connection", "Upgrade")
		out["Upgrade"] = append([]string(nil), r.Header.Values("Upgrade")...)
	}
	if _, ok := out["User-Agent"]; !ok {
		out["User-Agent"] = []string{""} // HttpClient adds none; this keeps Go's out
	}
	return out
}

// addCustomHeaders is CustomHttpHeadersMiddleware: host.json extensions.http.customHeaders are
// added to every response that lacks them.
func (h *Host) addCustomHeaders(hdr http.Header) {
	for k, v := range h.app.customHeaders {
		if _, ok := hdr[http.CanonicalHeaderKey(k)]; !ok {
			hdr.Set(k, v)
		}
	}
}

// isUpgradable is Kestrel's IHttpUpgradeFeature.IsUpgradableRequest (HTTP/1.1, Connection
// naming upgrade) with YARP's check of the Upgrade header: WebSocket or SPDY/*.
func isUpgradable(r *http.Request) bool {
	if r.ProtoMajor != 1 || r.ProtoMinor < 1 {
		return false
	}
	conn := false
	for _, v := range r.Header.Values("Connection") {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), "upgrade") {
				conn = true
			}
		}
	}
	up := r.Header.Get("Upgrade")
	return conn && (strings.EqualFold(up, "websocket") || len(up) >= 5 && strings.EqualFold(up[:5], "SPDY/"))
}

// upgraded relays an upgraded connection (a WebSocket) both ways: HttpForwarder.
// HandleUpgradedResponse. The 101 and the handler's headers go to the caller (Connection and
// Upgrade restored by FixupUpgradeResponseHeaders), then bytes are copied each way until either
// side ends, each direction resetting the 240 s activity timeout.
func (h *Host) upgraded(w http.ResponseWriter, resp *http.Response, act *activity, inv *invocation, cleanup func()) {
	defer cleanup()
	back, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		resp.Body.Close()
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	defer back.Close()
	hdr := http.Header{}
	for k, vs := range resp.Header {
		if !excludedHeaders[http.CanonicalHeaderKey(k)] {
			hdr[k] = vs
		}
	}
	if up := resp.Header.Values("Upgrade"); len(up) > 0 {
		for _, t := range strings.Split(resp.Header.Get("Connection"), ",") {
			if strings.EqualFold(strings.TrimSpace(t), "upgrade") {
				hdr.Set("Connection", strings.TrimSpace(t))
				hdr["Upgrade"] = up
				break
			}
		}
	}
	h.addCustomHeaders(hdr)
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\n")
	_ = hdr.Write(brw)
	brw.WriteString("\r\n")
	if brw.Flush() != nil {
		return
	}
	var once sync.Once
	end := func() { once.Do(func() { conn.Close(); back.Close() }) }
	go func() {
		select {
		case <-act.ctxDone():
		case <-inv.failed:
		}
		end()
	}()
	done := make(chan struct{}, 2)
	go func() { copyActive(back, brw.Reader, act); end(); done <- struct{}{} }()
	go func() { copyActive(conn, back, act); end(); done <- struct{}{} }()
	<-done
	<-done
}

func copyActive(dst io.Writer, src io.Reader, act *activity) {
	buf := make([]byte, 64*1024)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			act.reset()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			act.reset()
		}
		if err != nil {
			return
		}
	}
}

// activity is YARP's ActivityCancellationTokenSource: it cancels when ActivityTimeout passes
// without a reset.
type activity struct {
	timeout time.Duration
	cancel  context.CancelFunc
	mu      sync.Mutex
	t       *time.Timer
	fired   atomic.Bool
	done    chan struct{}
}

func newActivity(timeout time.Duration, cancel context.CancelFunc) *activity {
	a := &activity{timeout: timeout, cancel: cancel, done: make(chan struct{})}
	a.t = time.AfterFunc(timeout, func() {
		a.fired.Store(true)
		close(a.done)
		cancel()
	})
	return a
}

func (a *activity) reset() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.fired.Load() {
		a.t.Reset(a.timeout)
	}
}

func (a *activity) stop()                    { a.t.Stop() }
func (a *activity) expired() bool            { return a.fired.Load() }
func (a *activity) ctxDone() <-chan struct{} { return a.done }

// route finds the function whose route takes the path and method (ASP.NET Core routing over the
// decoded path).
func (h *Host) route(path, method string) *function {
	for i := range h.app.functions {
		f := &h.app.functions[i]
		if f.match(path) && f.allows(method) {
			return f
		}
	}
	return nil
}

func isHostRoute(path string) bool {
	p := strings.ToLower(path)
	return p == "/admin" || strings.HasPrefix(p, "/admin/") || strings.HasPrefix(p, "/runtime/webhooks/")
}

// rawPath is the request target's path as sent.
func rawPath(r *http.Request) string {
	u := r.RequestURI
	if strings.HasPrefix(u, "/") {
		if i := strings.IndexByte(u, '?'); i >= 0 {
			u = u[:i]
		}
		return u
	}
	if pu, err := url.Parse(u); err == nil && pu.Path != "" {
		return pu.EscapedPath()
	}
	return "/"
}

// kestrelPath is the path Kestrel gives the app: percent-decoded except %2F, which stays
// encoded, and with "." and ".." segments removed.
func kestrelPath(raw string) string {
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c == '%' && i+2 < len(raw) && ishex(raw[i+1]) && ishex(raw[i+2]) {
			v := unhex(raw[i+1])<<4 | unhex(raw[i+2])
			if v != '/' {
				b.WriteByte(v)
				i += 2
				continue
			}
		}
		b.WriteByte(c)
	}
	return removeDotSegments(b.String())
}

func removeDotSegments(p string) string {
	if !strings.Contains(p, ".") {
		return p
	}
	segs := strings.Split(p, "/")
	var out []string
	for i, s := range segs {
		switch s {
		case ".":
			if i == len(segs)-1 {
				out = append(out, "")
			}
		case "..":
			if len(out) > 1 {
				out = out[:len(out)-1]
			}
			if i == len(segs)-1 {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	r := strings.Join(out, "/")
	if !strings.HasPrefix(r, "/") {
		r = "/" + r
	}
	return r
}

// yarpPath is RequestUtilities.EncodePath: characters outside
// !$&'()*+,-./0-9:;=@A-Z_a-z~ are percent-encoded as Uri.EscapeDataString does, '%' included,
// so a %2F kept by Kestrel reaches the handler as %252F.
func yarpPath(p string) string {
	const valid = "!$&'()*+,-./0123456789:;=@ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~"
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if strings.IndexByte(valid, p[i]) >= 0 {
			b.WriteByte(p[i])
		} else {
			fmt.Fprintf(&b, "%%%02X", p[i])
		}
	}
	return b.String()
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}
