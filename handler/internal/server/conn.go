package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aoai-failover/gateway/handler/internal/apierr"
	"github.com/aoai-failover/gateway/handler/internal/wire"
	"golang.org/x/net/http/httpguts"
)

// exchange is what one request needs for its whole life, allocated at once: its body as the
// handler reads it, and its response.
type exchange struct {
	body requestBody
	resp response
}

// conn is one client connection, served by one goroutine, one request at a time.
type conn struct {
	s      *Server
	nc     net.Conn
	remote string
	r      connReader
	br     *bufio.Reader
	idle   atomic.Bool // waiting for a request; Shutdown may interrupt it
	header http.Header // the response headers, reused by each request
	// hijacked: the handler took the connection over (response.Hijack); from then on the
	// connection, its read buffer and the bytes in it are the handler's.
	hijacked bool

	// The caller-left watch of the request in flight (see watch).
	watchMu    sync.Mutex
	watchTimer *time.Timer
	watchArmed bool // the request in flight may be watched
	watching   bool // a watch read is in progress
	stopping   bool // the request ended: a watch read's error means nothing
	watchDone  chan struct{}
	cancel     context.CancelCauseFunc // the request's context's
	gone       bool                    // the caller closed the connection
}

// errCallerLeft is the cause of a request's cancellation when its caller closed the connection.
var errCallerLeft = errors.New("the caller closed the connection")

func (c *conn) serve() {
	c.br = readers.Get().(*bufio.Reader)
	c.br.Reset(&c.r)
	defer func() {
		if c.watchTimer != nil {
			c.watchTimer.Stop()
		}
		if c.hijacked {
			// The handler has returned (serveOne took it off the server's books); the
			// connection and its reader went with the hijack and are not the server's to close
			// or reuse.
			return
		}
		c.nc.Close()
		c.s.forget(c)
		c.br.Reset(nil)
		readers.Put(c.br)
	}()
	for {
		if !c.next() {
			return
		}
		keep := c.serveOne()
		if !keep || c.s.closing.Load() {
			return
		}
	}
}

// next waits for the first byte of the next request, within the idle timeout, and reports
// whether there is one to read.
func (c *conn) next() bool {
	c.idle.Store(true)
	if c.s.closing.Load() {
		c.idle.Store(false)
		return false
	}
	if d := c.s.IdleTimeout; d > 0 {
		_ = c.nc.SetReadDeadline(time.Now().Add(d))
	}
	_, err := c.br.Peek(1)
	// Shutdown takes an idle connection by clearing the flag before it cuts the wait short:
	// if it got here first, its deadline may land at any moment, so the connection ends now.
	if !c.idle.CompareAndSwap(true, false) {
		return false
	}
	return err == nil && !c.s.closing.Load()
}

// serveOne reads one request and answers it, and reports whether the connection may carry
// another.
func (c *conn) serveOne() (keep bool) {
	// The idle wait's deadline is still set. A head already read whole (the usual case) needs
	// no deadline of its own; otherwise the rest of it must come within ReadHeaderTimeout.
	headTimed := c.s.ReadHeaderTimeout > 0 && !c.headBuffered()
	if headTimed {
		_ = c.nc.SetReadDeadline(time.Now().Add(c.s.ReadHeaderTimeout))
	} else {
		_ = c.nc.SetReadDeadline(time.Time{})
	}
	limit := c.s.MaxHeaderBytes
	if limit <= 0 {
		limit = defaultMaxHeader
	}
	// As in net/http, the limit counts what is read from the connection, which can include
	// the start of the body; the slack keeps a full read buffer from counting against it.
	c.r.remain = int64(limit) + 4096
	ex := new(exchange)
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	req, err := wire.ReadRequest(ctx, c.br)
	tooLarge := c.r.remain == 0
	c.r.remain = -1
	if err != nil {
		switch {
		case tooLarge || errors.Is(err, wire.ErrHeadTooLong):
			c.reject(http.StatusRequestHeaderFieldsTooLarge, "RequestHeaderFieldsTooLarge", "the request's headers are larger than the gateway's limit")
		case errors.Is(err, wire.ErrBadVersion):
			c.reject(http.StatusHTTPVersionNotSupported, "HTTPVersionNotSupported", "only HTTP/1.0 and HTTP/1.1 are served")
		case isNetError(err):
			// The caller left or was too slow: nobody to answer.
		default:
			c.reject(http.StatusBadRequest, "BadRequest", "malformed HTTP request: "+err.Error())
		}
		return false
	}
	if e := req.Header["Expect"]; len(e) > 0 && req.ProtoAtLeast(1, 1) &&
		!httpguts.HeaderValuesContainsToken(e, "100-continue") {
		// HTTP/1.0 servers ignore Expect (RFC 9110 10.1.1); an HTTP/1.1 expectation other than
		// 100-continue cannot be met.
		c.reject(http.StatusExpectationFailed, "ExpectationFailed", "the only expectation served is 100-continue")
		return false
	}
	if headTimed {
		_ = c.nc.SetReadDeadline(time.Time{})
	}

	req.RemoteAddr = c.remote
	b := &ex.body
	*b = requestBody{c: c, rc: req.Body, continueNeeded: expectsContinue(req),
		inBuffer: req.ContentLength >= 0 && int64(c.br.Buffered()) >= req.ContentLength}
	if req.Body == http.NoBody {
		b.eof = true
	}
	req.Body = b

	w := &ex.resp
	w.start(c, req, b)
	b.w = w
	c.arm(cancel, b.eof)
	aborted := c.handle(w, req)
	if c.hijacked {
		cancel(nil)
		c.s.hijackDone(c)
		return false
	}
	c.disarm()
	cancel(nil)
	if aborted || w.err != nil || c.isGone() {
		// A caller that left (closed or half-closed) is sent nothing more: no answer the
		// handler did not give, and no rest of one it gave.
		w.release()
		return false
	}
	w.finish()
	b.dropUnread()
	keep = !w.closeAfter && w.err == nil && !c.isGone() && b.eof
	w.release()
	if !keep && !b.eof && w.err == nil {
		c.lingerClose()
	}
	return keep
}

// lingerClose ends a connection whose request body the handler did not read (a refusal sent
// early, such as 413): closing with unread data would make the kernel reset the connection,
// and a client still sending could lose the answer. So: end the sending side, then read and
// drop what the client still sends, for a short while, before closing.
func (c *conn) lingerClose() {
	if tc, ok := c.nc.(interface{ CloseWrite() error }); ok {
		_ = tc.CloseWrite()
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	_, _ = io.CopyN(io.Discard, c.nc, 4<<20)
}

// headBuffered reports whether a whole request head is already in the read buffer.
func (c *conn) headBuffered() bool {
	buf, _ := c.br.Peek(c.br.Buffered())
	return bytes.Contains(buf, headEnd)
}

var headEnd = []byte("\r\n\r\n")

// handle runs the handler. A panic ends the connection: http.ErrAbortHandler quietly (a
// handler breaking a response it had started on purpose), anything else with a log line.
func (c *conn) handle(w *response, req *http.Request) (aborted bool) {
	defer func() {
		if v := recover(); v != nil {
			aborted = true
			if v != http.ErrAbortHandler {
				c.s.logError("panic serving request", "path", req.URL.Path, "panic", v)
			}
		}
	}()
	c.s.Handler.ServeHTTP(w, req)
	return false
}

// reject answers a request that cannot be served, in the Azure error shape, and the
// connection closes after it.
func (c *conn) reject(status int, code, message string) {
	bw := writers.Get().(*bufio.Writer)
	bw.Reset(c.nc)
	_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	body := apierr.New(status, code, message).JSON()
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(wire.StatusLine(status))
	bw.WriteString("\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\nX-Served-By: none\r\nX-Gateway-Attempts: 0\r\nContent-Length: ")
	bw.WriteString(strconv.Itoa(len(body)))
	bw.WriteString("\r\n\r\n")
	bw.Write(body)
	_ = bw.Flush()
	bw.Reset(nil)
	writers.Put(bw)
}

// expectsContinue: the client waits for 100 Continue before it sends its body (an HTTP/1.0
// client, or one with no body, does not).
func expectsContinue(req *http.Request) bool {
	return req.ProtoAtLeast(1, 1) && req.ContentLength != 0 &&
		httpguts.HeaderValuesContainsToken(req.Header["Expect"], "100-continue")
}

func isNetError(err error) bool {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var oe *net.OpError
	return errors.As(err, &oe)
}

// connReader reads from the connection for the request parser and bodies. remain, when not
// negative, is how much more may be read (the header limit); bytes read by a watch (pipelined
// requests) are handed out first.
type connReader struct {
	nc     net.Conn
	remain int64
	stash  []byte // read by the watch, not yet handed out
}

func (r *connReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if r.remain == 0 {
		return 0, errHeaderTooLarge
	}
	if len(r.stash) > 0 {
		if r.remain > 0 && int64(len(p)) > r.remain {
			p = p[:r.remain]
		}
		n := copy(p, r.stash)
		r.stash = r.stash[n:]
		if len(r.stash) == 0 {
			r.stash = nil
		}
		if r.remain > 0 {
			r.remain -= int64(n)
		}
		return n, nil
	}
	if r.remain > 0 && int64(len(p)) > r.remain {
		p = p[:r.remain]
	}
	n, err := r.nc.Read(p)
	if r.remain > 0 {
		r.remain -= int64(n)
	}
	return n, err
}

var errHeaderTooLarge = errors.New("request headers too large")

// requestBody is the handler's view of the request body: it sends 100 Continue before the
// first read when the client asked for it, and notes the end, after which the connection may
// be watched.
type requestBody struct {
	c              *conn
	w              *response // the answer: no 100 Continue once it has started
	rc             io.ReadCloser
	continueNeeded bool
	eof            bool
	inBuffer       bool // the whole body was read with the head
}

func (b *requestBody) Read(p []byte) (int, error) {
	if b.eof {
		return 0, io.EOF
	}
	if b.continueNeeded {
		b.continueNeeded = false
		// Once the final response has begun, a 100 Continue would land inside it: the client
		// then sends its body on its own, or never, and the connection closes after the answer.
		if b.w == nil || !b.w.sent {
			if _, err := io.WriteString(b.c.nc, "HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
				return 0, err
			}
		}
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.eof = true
		b.c.bodyRead()
	}
	return n, err
}

func (b *requestBody) Close() error { return nil }

// dropUnread drops what the handler left unread of a body that came whole with its head (an
// early answer such as a 404 or 405), so that the connection can carry the next request. It
// reads only from the buffer.
func (b *requestBody) dropUnread() {
	if b.eof || !b.inBuffer {
		return
	}
	if _, err := io.Copy(io.Discard, b.rc); err == nil {
		b.eof = true
	}
}

// The watch. Reads on the connection after the request body has ended return only when the
// caller sends more (pipelined requests: the bytes are kept for them), closes or half-closes the
// connection, or the read is interrupted. It runs on the timer's goroutine, WatchAfter into the
// request, and keeps reading past pipelined bytes (up to maxStash of them) so that a caller that
// pipelines and then leaves is noticed as well.

// maxStash bounds the pipelined bytes a watch holds; past it the watch stops reading, and a
// caller that then leaves is noticed when its answer is written.
const maxStash = 64 << 10

// arm prepares the watch of the request in flight; it starts now if the body is already read.
func (c *conn) arm(cancel context.CancelCauseFunc, bodyDone bool) {
	c.watchMu.Lock()
	c.cancel, c.gone, c.stopping, c.watchArmed = cancel, false, false, false
	c.watchMu.Unlock()
	if bodyDone {
		c.bodyRead()
	}
}

// bodyRead starts the watch timer.
func (c *conn) bodyRead() {
	c.watchMu.Lock()
	defer c.watchMu.Unlock()
	if c.watchArmed || c.stopping {
		return
	}
	c.watchArmed = true
	d := c.s.WatchAfter
	if d <= 0 {
		d = defaultWatchAfter
	}
	if c.watchTimer == nil {
		c.watchTimer = time.AfterFunc(d, c.watch)
	} else {
		c.watchTimer.Reset(d)
	}
}

func (c *conn) watch() {
	c.watchMu.Lock()
	if !c.watchArmed || c.stopping {
		c.watchMu.Unlock()
		c.watchDone <- struct{}{}
		return
	}
	c.watching = true
	c.watchMu.Unlock()

	var buf [2048]byte
	for {
		n, err := c.nc.Read(buf[:])
		c.watchMu.Lock()
		if n > 0 {
			c.r.stash = append(c.r.stash, buf[:n]...)
		}
		// A deadline is not the caller leaving: disarm's interruption, or one the handler left.
		if err != nil && !c.stopping && !errors.Is(err, os.ErrDeadlineExceeded) {
			c.gone = true
			c.cancel(errCallerLeft)
		}
		if err != nil || c.stopping || len(c.r.stash) >= maxStash {
			break
		}
		c.watchMu.Unlock()
	}
	c.watching = false
	c.watchMu.Unlock()
	c.watchDone <- struct{}{}
}

// disarm ends the watch of the request that just ended, waiting for a watch read to return.
func (c *conn) disarm() {
	c.watchMu.Lock()
	c.stopping = true
	armed := c.watchArmed
	c.watchArmed = false
	c.watchMu.Unlock()
	if !armed || c.watchTimer.Stop() {
		return // the timer never fired: no watch ran
	}
	c.watchMu.Lock()
	if c.watching {
		_ = c.nc.SetReadDeadline(aLongTimeAgo)
	}
	c.watchMu.Unlock()
	<-c.watchDone
	_ = c.nc.SetReadDeadline(time.Time{})
}

func (c *conn) isGone() bool {
	c.watchMu.Lock()
	defer c.watchMu.Unlock()
	return c.gone
}
