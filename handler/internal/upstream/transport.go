// Package upstream is the HTTP/1.1 client the gateway uses to call Azure OpenAI. Unlike
// net/http's Transport, which hands every request to a reader and a writer goroutine per
// connection, it writes the request and reads the response on the caller's own goroutine:
// two fewer goroutine hand-offs per request, which is most of what a Go proxy adds to a
// request's latency and CPU. Connections are kept per host and reused; a request on a kept
// connection that the server had already closed is retried once on a new one, as net/http does.
package upstream

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aoai-failover/gateway/handler/internal/rawio"
	"github.com/aoai-failover/gateway/handler/internal/wire"
	"golang.org/x/net/http/httpguts"
)

// Transport is an http.RoundTripper for HTTP/1.1 over TCP or TLS.
type Transport struct {
	// Dialer opens connections; its Timeout bounds connecting.
	Dialer *net.Dialer
	// TLSConfig is cloned for each TLS connection; ServerName is set per host.
	TLSConfig *tls.Config
	// HandshakeTimeout bounds the TLS handshake.
	HandshakeTimeout time.Duration
	// IdleTimeout closes a kept connection unused for this long.
	IdleTimeout time.Duration
	// MaxIdlePerHost bounds the connections kept per host.
	MaxIdlePerHost int

	mu   sync.Mutex
	idle map[poolKey][]*conn // most recently used last
}

// New returns a Transport with the gateway's defaults.
func New(connect time.Duration) *Transport {
	return &Transport{
		Dialer:           &net.Dialer{Timeout: connect, KeepAlive: 30 * time.Second},
		TLSConfig:        &tls.Config{MinVersion: tls.VersionTLS12},
		HandshakeTimeout: connect,
		IdleTimeout:      90 * time.Second,
		MaxIdlePerHost:   1024,
	}
}

type conn struct {
	nc        net.Conn
	br        *bufio.Reader
	key       poolKey
	idleSince time.Time
	reused    bool
	abortFunc func() // abort, made once rather than for each exchange
}

// abort ends the exchange in progress at once, whatever it is blocked on.
func (c *conn) abort() {
	_ = c.nc.SetDeadline(time.Unix(1, 0))
}

// cancelNotifier is a request context that runs one function when it is cancelled, without the
// allocations of context.AfterFunc: the gateway's attempt contexts (cancelctx.Context) are.
type cancelNotifier interface {
	OnCancel(f func()) bool
	StopOnCancel() bool
}

// cancelWatch aborts the exchange on a connection when the request's context is cancelled.
type cancelWatch struct {
	n    cancelNotifier // when the context is one
	stop func() bool    // context.AfterFunc's, for any other context
}

func watchCancel(ctx context.Context, c *conn) cancelWatch {
	if n, ok := ctx.(cancelNotifier); ok {
		if !n.OnCancel(c.abortFunc) {
			c.abort() // cancelled already
		}
		return cancelWatch{n: n}
	}
	return cancelWatch{stop: context.AfterFunc(ctx, c.abortFunc)}
}

// end stops the watch. It reports false if the cancellation came first: the connection is then
// aborted, or about to be.
func (w cancelWatch) end() bool {
	if w.n != nil {
		return w.n.StopOnCancel()
	}
	return w.stop()
}

// writers buffer a request while it is written: a connection spends nearly all its life reading
// a response (a stream can last minutes), so it keeps no write buffer of its own.
var writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}

func writeRequest(nc net.Conn, req *http.Request) error {
	bw := writers.Get().(*bufio.Writer)
	bw.Reset(nc)
	err := writeHead(bw, req)
	if err == nil && req.ContentLength > 0 {
		var n int64
		if sized, ok := req.Body.(interface{ Len() int }); ok && int64(sized.Len()) == req.ContentLength {
			n, err = io.Copy(bw, req.Body) // a bytes.Reader writes itself out, with no copy buffer
		} else {
			n, err = io.CopyN(bw, req.Body, req.ContentLength)
		}
		if err == nil && n != req.ContentLength {
			err = io.ErrShortWrite
		}
	}
	if err == nil {
		err = bw.Flush()
	}
	bw.Reset(nil)
	writers.Put(bw)
	return err
}

// writeHead writes the request line and headers. It is what req.Write does for the requests
// the gateway makes (a body of known length, no trailers), without sorting the headers or
// building the request URI as a new string. A header that could split the request is refused,
// naming the header but never its value (which may be a credential).
func writeHead(bw *bufio.Writer, req *http.Request) error {
	if req.ContentLength < 0 || req.ContentLength > 0 && req.Body == nil {
		return errors.New("upstream: a request body must have a known length")
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	if !httpguts.ValidHostHeader(host) {
		return errors.New("upstream: invalid host")
	}
	bw.WriteString(req.Method)
	bw.WriteByte(' ')
	if u := req.URL; u.Opaque == "" && !u.ForceQuery {
		if p := u.EscapedPath(); p != "" {
			bw.WriteString(p)
		} else {
			bw.WriteByte('/')
		}
		if u.RawQuery != "" {
			bw.WriteByte('?')
			bw.WriteString(u.RawQuery)
		}
	} else {
		bw.WriteString(u.RequestURI())
	}
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	for k, vv := range req.Header {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Connection", "Trailer":
			continue // set here, or not at all
		}
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("upstream: invalid header name %q", k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("upstream: invalid value for header %q", k)
			}
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	if req.ContentLength > 0 || req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch {
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), req.ContentLength, 10))
		bw.WriteString("\r\n")
	}
	if req.Close {
		bw.WriteString("Connection: close\r\n")
	}
	_, err := bw.WriteString("\r\n")
	return err
}

// RoundTrip sends req and returns the response. The body must be read to the end or closed;
// reading it to the end gives the connection back for reuse.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	key, err := target(req)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	ctx := req.Context()
	for try := 0; ; try++ {
		c, err := t.get(ctx, key)
		if err != nil {
			closeBody(req)
			return nil, err
		}
		resp, retry, err := t.exchange(ctx, c, req)
		if err == nil {
			return resp, nil
		}
		// A kept connection the server closed while idle fails before any byte of a
		// response. That is almost always the server's keep-alive timeout racing the request,
		// so the request goes once more on a new connection; in the rare case that the
		// service did process it and then dropped the connection, the cost is a duplicate
		// completion, which changes no state.
		if retry && try == 0 && req.GetBody != nil && ctx.Err() == nil {
			body, gerr := req.GetBody()
			if gerr == nil {
				r2 := *req
				r2.Body = body
				req = &r2
				continue
			}
		}
		return nil, err
	}
}

// exchange writes req on c and reads the response head. retry reports a failure on a reused
// connection before any response byte arrived.
func (t *Transport) exchange(ctx context.Context, c *conn, req *http.Request) (*http.Response, bool, error) {
	watch := watchCancel(ctx, c)
	fail := func(err error) (*http.Response, bool, error) {
		watch.end()
		c.nc.Close()
		if ctx.Err() != nil { // the context is cancelled before abort is called
			return nil, false, ctx.Err()
		}
		return nil, c.reused, err
	}
	if err := writeRequest(c.nc, req); err != nil {
		return fail(err)
	}
	if _, err := c.br.Peek(1); err != nil {
		return fail(err)
	}
	resp, err := wire.ReadResponse(c.br, req)
	if err != nil {
		r, _, err := fail(err)
		return r, false, err
	}
	noBody := resp.Body == http.NoBody // HEAD, 204, 304, 1xx or a zero length, as wire framed it
	b := &body{t: t, c: c, rc: resp.Body, watch: watch, reusable: !resp.Close && !req.Close}
	resp.Body = b
	if noBody {
		// Nothing to read: give the connection back now rather than on a Read that may not come.
		b.finish(true)
	}
	return resp, false, nil
}

// body gives the connection back to the pool once the response has been read to its end.
type body struct {
	t        *Transport
	c        *conn
	rc       io.ReadCloser
	watch    cancelWatch
	reusable bool
	done     atomic.Bool
}

func (b *body) Read(p []byte) (int, error) {
	if b.done.Load() {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.finish(true)
	} else if err != nil {
		b.finish(false)
	}
	return n, err
}

func (b *body) Close() error {
	b.finish(false)
	return nil
}

// finish ends the exchange once: the connection is kept only when the body was read to its
// end and no cancellation touched the connection.
func (b *body) finish(complete bool) {
	if !b.done.CompareAndSwap(false, true) {
		return
	}
	notCancelled := b.watch.end()
	if complete && notCancelled && b.reusable {
		b.t.put(b.c)
		return
	}
	b.c.nc.Close()
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// poolKey names the connections that can carry a request: same scheme, same host and port.
type poolKey struct {
	tls  bool
	host string // as in the URL, with or without a port
}

func target(req *http.Request) (poolKey, error) {
	switch req.URL.Scheme {
	case "https":
		return poolKey{tls: true, host: req.URL.Host}, nil
	case "http":
		return poolKey{host: req.URL.Host}, nil
	}
	return poolKey{}, fmt.Errorf("upstream: unsupported scheme %q", req.URL.Scheme)
}

// address is where to dial for k, and the TLS server name ("" for plain HTTP).
func (k poolKey) address() (addr, tlsHost string) {
	u := url.URL{Host: k.host}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "80"
		if k.tls {
			port = "443"
		}
	}
	if k.tls {
		tlsHost = host
	}
	return net.JoinHostPort(host, port), tlsHost
}

func (t *Transport) get(ctx context.Context, key poolKey) (*conn, error) {
	now := time.Now()
	t.mu.Lock()
	if t.idle == nil {
		t.idle = map[poolKey][]*conn{}
	}
	list := t.idle[key]
	for len(list) > 0 {
		c := list[len(list)-1]
		list = list[:len(list)-1]
		if now.Sub(c.idleSince) < t.IdleTimeout {
			t.idle[key] = list
			t.mu.Unlock()
			c.reused = true
			return c, nil
		}
		c.nc.Close()
	}
	t.idle[key] = list
	t.mu.Unlock()
	return t.dial(ctx, key)
}

func (t *Transport) dial(ctx context.Context, key poolKey) (*conn, error) {
	addr, tlsHost := key.address()
	nc, err := t.Dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	nc = rawio.Wrap(nc)
	if tlsHost != "" {
		cfg := t.TLSConfig.Clone()
		cfg.ServerName = tlsHost
		cfg.NextProtos = []string{"http/1.1"}
		hctx, cancel := context.WithTimeout(ctx, t.HandshakeTimeout)
		defer cancel()
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(hctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("tls handshake with %s: %w", addr, err)
		}
		nc = tc
	}
	c := &conn{nc: nc, br: bufio.NewReaderSize(nc, 4<<10), key: key}
	c.abortFunc = c.abort
	return c, nil
}

func (t *Transport) put(c *conn) {
	c.idleSince = time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.idle == nil {
		t.idle = map[poolKey][]*conn{}
	}
	if len(t.idle[c.key]) >= t.MaxIdlePerHost {
		c.nc.Close()
		return
	}
	t.idle[c.key] = append(t.idle[c.key], c)
}

// CloseIdleConnections closes every kept connection.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, list := range t.idle {
		for _, c := range list {
			c.nc.Close()
		}
		delete(t.idle, k)
	}
}
