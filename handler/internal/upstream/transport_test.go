package upstream

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aoai-failover/gateway/handler/internal/cancelctx"
)

// countingServer counts the connections its clients open.
func countingServer(t *testing.T, h http.HandlerFunc, useTLS bool) (*httptest.Server, *atomic.Int32) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	if useTLS {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return srv, &conns
}

func post(t *testing.T, tr *Transport, ctx context.Context, url, body string) (*http.Response, string, error) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader([]byte(body)))
	req.Header.Set("Api-Key", "k")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b), err
}

func echo(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	w.Header().Set("X-Path", r.URL.RequestURI())
	w.Header().Set("X-Key", r.Header.Get("Api-Key"))
	w.Write(b)
}

func TestReuseAndFraming(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		t.Run(fmt.Sprint("tls=", useTLS), func(t *testing.T) {
			srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
				switch r.URL.Path {
				case "/chunked":
					w.Write([]byte("part one, "))
					w.(http.Flusher).Flush()
					w.Write([]byte("part two"))
				case "/empty":
					w.WriteHeader(http.StatusNoContent)
				default:
					echo(w, r)
				}
			}, useTLS)
			tr := New(time.Second)
			if useTLS {
				pool := x509.NewCertPool()
				pool.AddCert(srv.Certificate())
				tr.TLSConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
			}
			for i := 0; i < 5; i++ {
				resp, body, err := post(t, tr, context.Background(), srv.URL+"/echo?api-version=1", fmt.Sprint("body ", i))
				if err != nil || resp.StatusCode != 200 || body != fmt.Sprint("body ", i) || resp.Header.Get("X-Path") != "/echo?api-version=1" || resp.Header.Get("X-Key") != "k" {
					t.Fatalf("request %d: %v %v %q", i, err, resp, body)
				}
			}
			_, body, err := post(t, tr, context.Background(), srv.URL+"/chunked", "")
			if err != nil || body != "part one, part two" {
				t.Fatalf("chunked: %v %q", err, body)
			}
			resp, _, err := post(t, tr, context.Background(), srv.URL+"/empty", "")
			if err != nil || resp.StatusCode != 204 {
				t.Fatalf("empty: %v %v", err, resp)
			}
			post(t, tr, context.Background(), srv.URL+"/echo", "again")
			if n := conns.Load(); n != 1 {
				t.Errorf("%d connections for sequential requests, want 1 reused", n)
			}
		})
	}
}

func TestAbandonedBodyClosesTheConnection(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write(bytes.Repeat([]byte("x"), 100000))
	}, false)
	tr := New(time.Second)
	req, _ := http.NewRequest(http.MethodPost, srv.URL, nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Read(make([]byte, 10))
	resp.Body.Close() // unread rest: the connection cannot be reused
	post(t, tr, context.Background(), srv.URL, "")
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (a half-read connection must not be reused)", n)
	}
}

func TestStaleConnectionIsRetriedOnce(t *testing.T) {
	var served atomic.Int32
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		echo(w, r)
	}, false)
	tr := New(time.Second)
	post(t, tr, context.Background(), srv.URL, "one")
	// The server drops its idle connections, as services do after their keep-alive timeout.
	srv.CloseClientConnections()
	time.Sleep(50 * time.Millisecond)
	_, body, err := post(t, tr, context.Background(), srv.URL, "two")
	if err != nil || body != "two" {
		t.Fatalf("after the server closed the kept connection: %v %q", err, body)
	}
	if served.Load() != 2 || conns.Load() != 2 {
		t.Errorf("served %d on %d connections; want 2 on 2", served.Load(), conns.Load())
	}
}

func TestConnectionCloseHonoured(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		echo(w, r)
	}, false)
	tr := New(time.Second)
	post(t, tr, context.Background(), srv.URL, "a")
	post(t, tr, context.Background(), srv.URL, "b")
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

// contextKinds are the two kinds of request context the transport watches: any context, through
// context.AfterFunc, and the gateway's own (cancelctx), through its OnCancel.
var contextKinds = []struct {
	name string
	make func() (context.Context, func())
}{
	{"context package", func() (context.Context, func()) { return context.WithCancel(context.Background()) }},
	{"cancelctx", func() (context.Context, func()) {
		c := new(cancelctx.Context)
		c.Init(context.Background())
		return c, func() { c.Cancel(nil) }
	}},
}

func TestCancellation(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.Write([]byte("ok"))
			return
		case "/midway":
			w.Write([]byte("start"))
			w.(http.Flusher).Flush()
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}, false)
	tr := New(time.Second)

	for _, kind := range contextKinds {
		t.Run(kind.name, func(t *testing.T) {
			ctx, cancel := kind.make()
			time.AfterFunc(100*time.Millisecond, cancel)
			start := time.Now()
			_, _, err := post(t, tr, ctx, srv.URL+"/hang", "")
			if !errors.Is(err, context.Canceled) || time.Since(start) > time.Second {
				t.Errorf("waiting for headers: %v after %s", err, time.Since(start))
			}

			ctx, cancel = kind.make()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/midway", nil)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 5)
			io.ReadFull(resp.Body, buf)
			go func() { time.Sleep(50 * time.Millisecond); cancel() }()
			if _, err := io.ReadAll(resp.Body); err == nil {
				t.Errorf("read of a cancelled body did not fail")
			}
			resp.Body.Close()

			// A context cancelled after its exchange ended (as each attempt's is) leaves the
			// kept connection alone: the next request reuses it.
			before := conns.Load()
			for i := 0; i < 3; i++ {
				ctx, cancel := kind.make()
				if _, body, err := post(t, tr, ctx, srv.URL+"/ok", ""); err != nil || body != "ok" {
					t.Fatalf("request %d after cancelled exchanges: %q, %v", i, body, err)
				}
				cancel()
			}
			if opened := conns.Load() - before; opened != 1 {
				t.Errorf("%d connections for three requests, want 1 (the cancelled ones are not reused)", opened)
			}
		})
	}

	_, _, err := post(t, tr, context.Background(), "http://127.0.0.1:1/", "")
	if err == nil {
		t.Errorf("connection refused not reported")
	}
	_, _, err = post(t, tr, context.Background(), "ftp://x/", "")
	if err == nil || !strings.Contains(err.Error(), "unsupported scheme") {
		t.Errorf("scheme: %v", err)
	}
}

func TestIdleTimeoutAndLimit(t *testing.T) {
	srv, conns := countingServer(t, echo, false)
	tr := New(time.Second)
	tr.IdleTimeout = 50 * time.Millisecond
	post(t, tr, context.Background(), srv.URL, "a")
	time.Sleep(80 * time.Millisecond)
	post(t, tr, context.Background(), srv.URL, "b")
	if n := conns.Load(); n != 2 {
		t.Errorf("an expired kept connection was reused: %d connections", n)
	}
	tr.MaxIdlePerHost = 0
	post(t, tr, context.Background(), srv.URL, "c")
	tr.mu.Lock()
	kept := len(tr.idle)
	for _, l := range tr.idle {
		kept = len(l)
	}
	tr.mu.Unlock()
	if kept != 0 {
		t.Errorf("kept %d connections over the limit", kept)
	}
	tr.CloseIdleConnections()
}
