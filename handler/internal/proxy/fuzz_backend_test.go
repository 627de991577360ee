package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aoai-failover/gateway/handler/internal/config"
)

// FuzzBackendResponse sends whatever bytes a backend may answer with through the production
// transport and the forwarder. Target a1 answers with the fuzzed bytes (and then closes the
// connection, or keeps it open); a2 is healthy. Whatever a1 sends, the caller's answer comes in
// time and is one of: a1's answer with a status the failover rules let through, a2's answer
// (its marker in the body), or the gateway's own error in Azure's shape. Never a panic other
// than the deliberate abort of a broken committed answer, never a hang.
func FuzzBackendResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray",
		"HTTP/1.1 204 No Content\r\n\r\nbody after a 204",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n{}\r\n0\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
		"HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
		"HTTP/1.1 429 Too Many Requests\r\nRetry-After-Ms: 5\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: {\"a\":1}\n\ndata: {bad\n\n",
		"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n10\r\ndata: {\"a\":1}\n\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}",
		"HTTP/1.1 20",
		"",
	} {
		f.Add(true, []byte(s))
		f.Add(false, []byte(s))
	}

	var script atomic.Pointer[[]byte]
	var closeAfter atomic.Bool
	a1 := newBackend(f, jsonAnswer(500, `{}`)) // only its address is used: the dialer serves a1
	a2 := newBackend(f, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"marker":"from-a2"}`)
	})
	a1Addr := strings.TrimPrefix(a1.srv.URL, "http://")
	tr := NewTransport(time.Second, nil)
	dial := tr.DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr != a1Addr {
			return dial(ctx, network, addr)
		}
		client, server := net.Pipe()
		go serveScript(server, *script.Load(), closeAfter.Load())
		return client, nil
	}
	f.Cleanup(tr.CloseIdleConnections)
	short := func(r *config.Routing) {
		r.Timeouts.FirstByte = config.Duration(10 * time.Millisecond) // the pipe answers at once: a wait means a hang
		r.Timeouts.PerOutputToken = 0
		r.Timeouts.StreamIdle = config.Duration(10 * time.Millisecond)
		r.Timeouts.Request = config.Duration(300 * time.Millisecond)
	}

	f.Fuzz(func(t *testing.T, closeIt bool, raw []byte) {
		script.Store(&raw)
		closeAfter.Store(closeIt)
		defer tr.CloseIdleConnections()
		tg := newGatewayWith(t, short, tr, a1, a2) // every input starts with both targets available

		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, chatPath, strings.NewReader(`{"messages":[]}`))
		req.Header.Set("Content-Type", "application/json")
		done := make(chan any, 1)
		go func() {
			defer func() { done <- recover() }()
			tg.gw.ServeHTTP(rec, req)
		}()
		select {
		case v := <-done:
			if v != nil && v != http.ErrAbortHandler {
				t.Fatalf("panic: %v", v)
			}
			if v == http.ErrAbortHandler {
				return // a committed answer broke: the caller sees a broken response, as it should
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the gateway did not answer within 5 s")
		}
		body := rec.Body.String()
		switch served := rec.Header().Get("X-Served-By"); served {
		case "a1/d1":
			if s := rec.Code; s < 200 || s == 401 || s == 403 || s == 404 || s == 408 || s == 429 || s >= 500 {
				t.Fatalf("a1's %d was passed on; the failover rules send it to the next target", s)
			}
			if strings.Contains(body, "from-a2") {
				t.Fatalf("a1's answer holds a2's: %q", body)
			}
		case "a2/d2":
			if rec.Code != 200 || body != `{"marker":"from-a2"}` {
				t.Fatalf("a2's answer changed: %d %q", rec.Code, body)
			}
		case "none":
			var e errorShape
			if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
				t.Fatalf("the gateway's own answer is not Azure-shaped: %d %q", rec.Code, body)
			}
		default:
			t.Fatalf("x-served-by %q", served)
		}
	})
}

// serveScript answers the first request on a connection with the script's bytes, then keeps
// the connection open (reading and dropping what comes) or closes it.
func serveScript(c net.Conn, script []byte, closeAfter bool) {
	defer c.Close()
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	_, _ = io.Copy(io.Discard, req.Body)
	_ = c.SetWriteDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write(script); err != nil || closeAfter {
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, _ = io.Copy(io.Discard, br)
}
