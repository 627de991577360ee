package server

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/aoai-failover/gateway/handler/internal/wire"
)

// response is the http.ResponseWriter of one request. Headers go out with the first body bytes
// that cannot wait (a Flush, a known Content-Length, or more than fits the hold buffer), or at
// the end; a body of unknown length that ends before that gets an exact Content-Length,
// otherwise it is sent chunked (to an HTTP/1.0 client: until the connection closes).
type response struct {
	c      *conn
	req    *http.Request
	body   *requestBody
	header http.Header

	status       int
	wroteHeader  bool  // WriteHeader was called, or implied by a Write
	sent         bool  // the status line and headers are in bw
	length       int64 // the handler's Content-Length; -1 if it set none
	written      int64 // body bytes accepted
	hold         []byte
	chunked      bool
	bodyless     bool // a HEAD request, or a status that has no body
	closeAfter   bool // the connection ends after this response
	bw           *bufio.Writer
	err          error
	readDeadline bool // the handler set a read deadline that is still on the connection
	ended        bool // EndBody sent the whole response
	hijacked     bool // the handler took the connection over
}

// holdLimit is how much of a body of unknown length is held back to send it with an exact
// Content-Length; error answers and small replies fit.
const holdLimit = 4 << 10

// start makes w the response to req. The header map is the connection's, emptied: a handler
// may not keep it once it has returned, so one map serves every request.
func (w *response) start(c *conn, req *http.Request, body *requestBody) {
	if c.header == nil {
		c.header = make(http.Header, 16)
	}
	clear(c.header)
	*w = response{c: c, req: req, body: body, header: c.header, length: -1, closeAfter: req.Close}
}

func (w *response) Header() http.Header { return w.header }

func (w *response) bodyDone() bool { return w.body.eof }

func (w *response) WriteHeader(code int) {
	if w.wroteHeader || w.hijacked {
		return
	}
	if code < 200 || code > 999 {
		if code >= 100 && code < 200 {
			return // informational answers are not sent; the final one follows
		}
		code = http.StatusInternalServerError
	}
	w.wroteHeader, w.status = true, code
	w.bodyless = w.req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified
	if v := w.header["Content-Length"]; len(v) > 0 {
		// Digits only: ParseInt would also take a sign, which is no Content-Length.
		if n, err := strconv.ParseInt(v[0], 10, 64); err == nil && len(v) == 1 && v[0][0] != '+' && v[0][0] != '-' {
			w.length = n
		} else {
			delete(w.header, "Content-Length")
		}
	}
	if httpguts.HeaderValuesContainsToken(w.header["Connection"], "close") {
		w.closeAfter = true
	}
}

func (w *response) Write(p []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.ended {
		return 0, errBodyEnded
	}
	if w.bodyless {
		if w.req.Method == http.MethodHead {
			w.written += int64(len(p))
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	if w.length >= 0 && w.written+int64(len(p)) > w.length {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if !w.sent {
		if w.length < 0 && len(w.hold)+len(p) <= holdLimit {
			w.hold = append(w.hold, p...)
			return len(p), nil
		}
		w.sendHeader(false)
	}
	w.writeBody(p)
	if w.err != nil {
		return 0, w.err
	}
	return len(p), nil
}

// FlushError sends what is written so far; http.ResponseController.Flush calls it.
func (w *response) FlushError() error {
	if w.hijacked {
		return http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil || w.ended {
		return w.err
	}
	if !w.sent {
		w.sendHeader(false)
	}
	if err := w.bw.Flush(); err != nil {
		w.fail(err)
	}
	return w.err
}

// errBodyEnded is what a write after EndBody gets.
var errBodyEnded = errors.New("server: write after the response body was ended")

// EndBody sends the rest of the response and its end (a chunked body's last chunk) at once,
// before the handler returns: a handler that knows its answer is complete lets the client have
// all of it now rather than after its own bookkeeping. Later writes fail.
func (w *response) EndBody() error {
	w.finish()
	w.ended = true
	return w.err
}

// Flush implements http.Flusher.
func (w *response) Flush() { _ = w.FlushError() }

// SetReadDeadline and SetWriteDeadline serve http.ResponseController. A read deadline governs
// reads of the request body: once the body is read, or wholly in the read buffer (the usual
// case), no read is left for it to govern and it is not set. One that was set is always
// cleared when asked, whatever the body's state: left in place it would end the watch for the
// caller leaving.
func (w *response) SetReadDeadline(t time.Time) error {
	if w.hijacked {
		return http.ErrHijacked
	}
	if t.IsZero() {
		if !w.readDeadline {
			return nil
		}
		w.readDeadline = false
		return w.c.nc.SetReadDeadline(t)
	}
	if w.body.eof || w.body.inBuffer {
		return nil
	}
	w.readDeadline = true
	return w.c.nc.SetReadDeadline(t)
}
func (w *response) SetWriteDeadline(t time.Time) error {
	if w.hijacked {
		return http.ErrHijacked
	}
	return w.c.nc.SetWriteDeadline(t)
}

// Errors of a Hijack the server cannot grant.
var (
	errHijackStarted = errors.New("server: Hijack after the response was started")
	errHijackBody    = errors.New("server: Hijack before the request body was read to its end")
)

// Hijack implements http.Hijacker, for a handler that switches the connection to another
// protocol (the Realtime API's WebSocket relay). It is refused once the response has begun
// (WriteHeader or Write called), while the request's body has not been read to its end (its
// bytes would be taken for the new protocol's), and after the caller left. The handler gets the
// connection with its deadlines cleared, and a reader that hands out first what the server had
// already read from the connection: bytes that came with the request's head, and any that the
// caller-left watch read while the request ran (a client that sends before it has the answer).
// A handler that reads the connection directly instead must take those from the reader first,
// as with net/http.
//
// From then on the connection is the handler's. The caller-left watch is stopped (so a caller
// that closes no longer cancels the request's context: the handler sees it on the connection),
// and the server never sets its deadlines, writes to it, closes it, or counts it among its
// connections, before or after the handler returns. It keeps only the request's context:
// Shutdown and Close cancel it with ErrServerClosed as the cause, and Shutdown waits for the
// handler to return like any request in flight.
func (w *response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c := w.c
	switch {
	case w.hijacked:
		return nil, nil, http.ErrHijacked
	case w.wroteHeader:
		return nil, nil, errHijackStarted
	case !w.body.eof:
		return nil, nil, errHijackBody
	}
	c.disarm() // waits for a watch read in progress; what it read stays for the reader
	if c.isGone() {
		return nil, nil, errCallerLeft
	}
	if err := c.nc.SetDeadline(time.Time{}); err != nil {
		return nil, nil, err
	}
	c.watchMu.Lock()
	cancel := c.cancel
	c.watchMu.Unlock()
	w.hijacked, w.readDeadline, c.hijacked = true, false, true
	c.s.hijack(c, cancel)
	// c.br reads through the connection's reader, which hands out the watch's bytes first.
	return c.nc, bufio.NewReadWriter(c.br, bufio.NewWriter(c.nc)), nil
}

// finish completes the response after the handler returned, unless EndBody already did.
func (w *response) finish() {
	if w.ended {
		return
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return
	}
	if !w.sent {
		w.sendHeader(true)
	}
	switch {
	case w.chunked:
		w.writeString("0\r\n\r\n")
	case w.length >= 0 && w.written < w.length && !w.bodyless:
		// The handler promised more than it wrote: the client must not wait for the rest.
		w.closeAfter = true
	}
	if w.err == nil {
		if err := w.bw.Flush(); err != nil {
			w.fail(err)
		}
	}
}

// sendHeader writes the status line and headers; final means the handler has returned, so a
// held body's length is known.
func (w *response) sendHeader(final bool) {
	w.sent = true
	w.bw = writers.Get().(*bufio.Writer)
	w.bw.Reset(w.c.nc)
	h := w.header
	delete(h, "Transfer-Encoding")
	if w.length < 0 {
		// A Content-Length set after WriteHeader was not taken as the body's length: sent, it
		// would contradict the framing chosen below.
		delete(h, "Content-Length")
	}
	switch {
	case w.bodyless && w.req.Method != http.MethodHead:
		delete(h, "Content-Length")
		w.length = 0
	case w.bodyless: // HEAD: say the length the body would have had, when it is known
		if w.length < 0 && final && w.written > 0 {
			h.Set("Content-Length", strconv.FormatInt(w.written, 10))
		}
	case w.length >= 0:
	case final:
		w.length = int64(len(w.hold))
		h.Set("Content-Length", strconv.Itoa(len(w.hold)))
	case w.req.ProtoAtLeast(1, 1):
		w.chunked = true
	default: // HTTP/1.0 and no length: the body ends when the connection does
		w.closeAfter = true
	}
	if w.c.s.closing.Load() || !w.bodyDone() && !w.body.inBuffer {
		// A body the handler did not read to its end (or was never asked for with 100
		// Continue) is not read on its behalf: the connection ends after this answer. One
		// wholly in the read buffer is dropped from it when the handler returns (dropUnread).
		w.closeAfter = true
	}
	w.writeString("HTTP/1.1 ")
	w.writeString(wire.StatusLine(w.status))
	w.writeString("\r\n")
	for k, vv := range h {
		if k == "Connection" || !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vv {
			w.writeString(k)
			w.writeString(": ")
			w.writeValue(v)
			w.writeString("\r\n")
		}
	}
	if _, ok := h["Date"]; !ok {
		w.writeString("Date: ")
		w.writeString(httpDate())
		w.writeString("\r\n")
	}
	if w.chunked {
		w.writeString("Transfer-Encoding: chunked\r\n")
	}
	switch {
	case w.closeAfter:
		w.writeString("Connection: close\r\n")
	case !w.req.ProtoAtLeast(1, 1):
		w.writeString("Connection: keep-alive\r\n")
	}
	w.writeString("\r\n")
	if len(w.hold) > 0 {
		held := w.hold
		w.hold = nil
		w.writeBody(held)
	}
}

func (w *response) writeBody(p []byte) {
	if len(p) == 0 || w.err != nil || w.bodyless {
		return
	}
	if w.chunked {
		var size [16]byte
		w.writeBytes(strconv.AppendInt(size[:0], int64(len(p)), 16))
		w.writeString("\r\n")
		w.writeBytes(p)
		w.writeString("\r\n")
		return
	}
	w.writeBytes(p)
}

// writeValue writes a header value with any control character (a CR or LF above all) as a
// space, so that no value can end the header early.
func (w *response) writeValue(v string) {
	if httpguts.ValidHeaderFieldValue(v) {
		w.writeString(v)
		return
	}
	b := []byte(v)
	for i, c := range b {
		if c < ' ' && c != '\t' || c == 0x7f {
			b[i] = ' '
		}
	}
	w.writeBytes(b)
}

func (w *response) writeString(s string) {
	if w.err == nil {
		if _, err := w.bw.WriteString(s); err != nil {
			w.fail(err)
		}
	}
}

func (w *response) writeBytes(p []byte) {
	if w.err == nil {
		if _, err := w.bw.Write(p); err != nil {
			w.fail(err)
		}
	}
}

func (w *response) fail(err error) {
	w.err = err
	w.closeAfter = true
}

// release gives the write buffer back.
func (w *response) release() {
	if w.bw != nil {
		w.bw.Reset(nil)
		writers.Put(w.bw)
		w.bw = nil
	}
}

// httpDate is the Date header's value, formatted once a second.
func httpDate() string {
	now := time.Now()
	sec := now.Unix()
	if d := cachedDate.Load(); d != nil && d.sec == sec {
		return d.text
	}
	d := &dateText{sec: sec, text: now.UTC().Format(http.TimeFormat)}
	cachedDate.Store(d)
	return d.text
}

type dateText struct {
	sec  int64
	text string
}

var cachedDate atomic.Pointer[dateText]
