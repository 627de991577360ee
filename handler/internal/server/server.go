// Package server is the gateway's HTTP/1.1 server: the Functions host (or Front Door, or an
// app) speaks HTTP/1.1 to the custom handler. It is kept instead of net/http's server because
// it refuses every request-smuggling shape (compare_test.go: net/http's server answers a request
// smuggled behind a CL.TE request on a kept connection); its cost per request is about the same
// (BenchmarkServers). Requests are read by the wire package; handlers are ordinary
// http.Handlers. What it leaves out: HTTP/2, TLS and content sniffing, none of which a custom
// handler needs.
//
// A handler may take the connection over with http.Hijacker (the Realtime API's WebSocket relay
// does, after its backend has switched protocols): see response.Hijack for what it is handed
// and what the server stops doing for that connection.
//
// A caller that leaves is noticed: once a request's body has been read, the connection is
// watched (after WatchAfter, so answers that come back at once never pay for it), and a close
// or half-close, with or without pipelined bytes before it, cancels the request's context; the
// caller is then sent nothing more.
package server

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Server serves HTTP/1.1 on listeners. Set its fields before Serve.
type Server struct {
	Handler http.Handler
	// ReadHeaderTimeout bounds reading a request's line and headers, from its first byte.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a kept-alive connection that sends no request for this long.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's line and headers; larger ones get 431.
	MaxHeaderBytes int
	// WatchAfter is how long a request runs before its connection is watched for the caller
	// leaving (which cancels the request's context). Zero means 50 ms.
	WatchAfter time.Duration
	// Logger receives the server's own errors (a panic in a handler); nil discards them.
	Logger *slog.Logger

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	// hijacked are the connections whose handlers took them over and are still running, with
	// the cancel function of each one's request context.
	hijacked map[*conn]context.CancelCauseFunc
	closing  atomic.Bool
	done     chan struct{} // closed by Shutdown or Close
}

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = http.ErrServerClosed

const (
	defaultWatchAfter = 50 * time.Millisecond
	defaultMaxHeader  = 1 << 20
)

func (s *Server) init() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listeners == nil {
		s.listeners = map[net.Listener]struct{}{}
		s.conns = map[*conn]struct{}{}
		s.hijacked = map[*conn]context.CancelCauseFunc{}
		s.done = make(chan struct{})
	}
}

// Serve accepts connections on ln until Shutdown or Close, and returns ErrServerClosed then.
func (s *Server) Serve(ln net.Listener) error {
	s.init()
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) {
				// Out of file descriptors or a transient accept error: wait and try again,
				// as net/http does, rather than give up serving.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(backoff):
				case <-s.done:
				}
				continue
			}
			return err
		}
		backoff = 0
		c := s.newConn(nc)
		if c == nil {
			nc.Close()
			return ErrServerClosed
		}
		go c.serve()
	}
}

// Shutdown stops accepting, closes idle connections, lets requests in flight finish (their
// connections close after the response), and returns when none is left or ctx ends. A handler
// that hijacked its connection has its request context cancelled with ErrServerClosed as the
// cause, so that it can end what it relays its own way (a WebSocket close frame), and Shutdown
// waits for it to return as it waits for any request in flight; the connection itself is the
// handler's to close.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if s.wakeIdle() == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// Close stops accepting and closes every connection at once. Hijacked connections are their
// handlers': Close cancels those handlers' request contexts (cause ErrServerClosed) and does not
// wait for them.
func (s *Server) Close() error {
	s.init()
	s.stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.nc.Close()
	}
	return nil
}

func (s *Server) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Swap(true) {
		return
	}
	close(s.done)
	for ln := range s.listeners {
		ln.Close()
	}
	for _, cancel := range s.hijacked {
		cancel(ErrServerClosed)
	}
}

// wakeIdle interrupts the wait of every idle connection, which then sees the server closing and
// ends, and reports how many connections (and handlers of hijacked ones) are left. It is
// repeated until none is: a connection that turns idle just after being passed over is caught by
// the next round.
func (s *Server) wakeIdle() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.idle.CompareAndSwap(true, false) { // next sees this and ends the connection
			_ = c.nc.SetReadDeadline(aLongTimeAgo)
		}
	}
	return len(s.conns) + len(s.hijacked)
}

// hijack hands c over to its handler: the server no longer closes it, sets its deadlines or
// counts it as a connection; it keeps only the request's cancel function, to tell the handler
// when the server shuts down (at once, if it already is).
func (s *Server) hijack(c *conn, cancel context.CancelCauseFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	s.hijacked[c] = cancel
	if s.closing.Load() {
		cancel(ErrServerClosed)
	}
}

// hijackDone forgets a hijacked connection whose handler has returned.
func (s *Server) hijackDone(c *conn) {
	s.mu.Lock()
	delete(s.hijacked, c)
	s.mu.Unlock()
}

func (s *Server) newConn(nc net.Conn) *conn {
	c := &conn{s: s, nc: nc, remote: nc.RemoteAddr().String(), watchDone: make(chan struct{}, 1)}
	c.r = connReader{nc: nc, remain: -1}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return nil
	}
	s.conns[c] = struct{}{}
	return c
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *Server) logError(msg string, args ...any) {
	if s.Logger != nil {
		s.Logger.Error(msg, args...)
	}
}

// aLongTimeAgo is a deadline in the past: setting it ends a blocked read at once.
var aLongTimeAgo = time.Unix(1, 0)

// readers and writers are pooled: an idle keep-alive connection holds only its read buffer.
var (
	readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}
	writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}
)
