package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aoai-failover/gateway/tests/testio"
)

const watchAfter = 10 * time.Millisecond

// slack bounds how late a timed event may be under -race on a busy machine.
const slack = 500 * time.Millisecond

func TestKeepAliveReusesTheConnection(t *testing.T) {
	ts := start(t, &Server{Handler: http.HandlerFunc(echo)})
	c := client(t)
	for i := range 5 {
		resp, err := c.Post(ts.url("/r"+strconv.Itoa(i)), "text/plain", strings.NewReader("body"+strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := fmt.Sprintf("POST /r%d len=5 body=body%d", i, i)
		if err != nil || resp.StatusCode != 200 || string(b) != want {
			t.Fatalf("request %d: %d %q %v; want 200 %q", i, resp.StatusCode, b, err, want)
		}
		if resp.ContentLength != int64(len(want)) || resp.Header.Get("Date") == "" {
			t.Fatalf("ContentLength %d, Date %q", resp.ContentLength, resp.Header.Get("Date"))
		}
	}
	if n := ts.accepted.Load(); n != 1 {
		t.Fatalf("accepted %d connections for 5 requests, want 1", n)
	}
}

func TestPipelinedRequestsAnsweredInOrder(t *testing.T) {
	ts := start(t, &Server{Handler: http.HandlerFunc(echo)})
	c := dial(t, ts.addr)
	c.send(t, "GET /first HTTP/1.1\r\nHost: h\r\n\r\n"+
		"POST /second HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"+
		"GET /third HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
	for _, want := range []string{"GET /first len=0 body=", "POST /second len=3 body=abc", "GET /third len=0 body="} {
		resp, body := c.read(t, "GET")
		if resp.StatusCode != 200 || body != want {
			t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, want)
		}
	}
	c.expectClosed(t)
}

func TestRequestBodies(t *testing.T) {
	ts := start(t, &Server{Handler: http.HandlerFunc(echo)})
	tests := []struct {
		name string
		raw  string
		want string
	}{
		{"content length", "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world", "POST /b len=11 body=hello world"},
		{"chunked", "POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n", "POST /b len=-1 body=hello world"},
		{"chunked with trailer", "POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n", "POST /b len=-1 body=abc"},
		{"no body", "DELETE /b HTTP/1.1\r\nHost: h\r\n\r\n", "DELETE /b len=0 body="},
	}
	c := dial(t, ts.addr) // one connection: each body must end exactly where the next request starts
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.send(t, tt.raw)
			resp, body := c.read(t, "POST")
			if resp.StatusCode != 200 || body != tt.want {
				t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, tt.want)
			}
		})
	}
	// net/http's client sends a body of unknown length chunked.
	resp, err := client(t).Post(ts.url("/c"), "text/plain", io.MultiReader(strings.NewReader("from "), strings.NewReader("a reader")))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "POST /c len=-1 body=from a reader" {
		t.Fatalf("chunked from net/http: %q", b)
	}
}

func TestExpectContinue(t *testing.T) {
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/refuse" {
			w.WriteHeader(http.StatusForbidden) // answers without reading the body
			return
		}
		echo(w, r)
	})})

	t.Run("continue then body", func(t *testing.T) {
		c := dial(t, ts.addr)
		c.send(t, "POST /e HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
		if resp, _ := c.read(t, "POST"); resp.StatusCode != http.StatusContinue {
			t.Fatalf("first answer %d, want 100", resp.StatusCode)
		}
		c.send(t, "hello")
		if resp, body := c.read(t, "POST"); resp.StatusCode != 200 || body != "POST /e len=5 body=hello" || resp.Close {
			t.Fatalf("final answer %d %q close=%v", resp.StatusCode, body, resp.Close)
		}
		c.send(t, "GET /after HTTP/1.1\r\nHost: h\r\n\r\n") // still kept alive
		if resp, body := c.read(t, "GET"); resp.StatusCode != 200 || body != "GET /after len=0 body=" {
			t.Fatalf("next request: %d %q", resp.StatusCode, body)
		}
	})
	t.Run("answer without reading", func(t *testing.T) {
		c := dial(t, ts.addr)
		c.send(t, "POST /refuse HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
		resp, _ := c.read(t, "POST")
		if resp.StatusCode != http.StatusForbidden || !resp.Close {
			t.Fatalf("got %d close=%v, want 403 and close (no 100)", resp.StatusCode, resp.Close)
		}
		c.expectClosed(t)
	})
	t.Run("other expectation", func(t *testing.T) {
		c := dial(t, ts.addr)
		c.send(t, "POST /e HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\nContent-Length: 0\r\n\r\n")
		resp, body := c.read(t, "POST")
		expectAzureError(t, resp, body, http.StatusExpectationFailed, "ExpectationFailed")
		c.expectClosed(t)
	})
}

func TestExpectContinueIgnoredWithoutBodyOrOnHTTP10(t *testing.T) {
	ts := start(t, &Server{Handler: http.HandlerFunc(echo)})
	for _, raw := range []string{
		"POST /e HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
		"POST /e HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
	} {
		c := dial(t, ts.addr)
		c.send(t, raw)
		if resp, body := c.read(t, "POST"); resp.StatusCode != 200 || !strings.HasPrefix(body, "POST /e") {
			t.Errorf("%q: got %d %q, want 200", raw, resp.StatusCode, body)
		}
	}
}

func TestNoContinueAfterTheResponseStarted(t *testing.T) {
	big := strings.Repeat("r", 8<<10)
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, big) // more than the hold buffer: the head and body go out now
		w.(http.Flusher).Flush()
		io.Copy(io.Discard, r.Body) // a full-duplex handler reads the body afterwards
	})})
	c := dial(t, ts.addr)
	c.send(t, "POST /dup HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
	resp, err := http.ReadResponse(c.br, &http.Request{Method: "POST"})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("got %v, %v", resp, err)
	}
	c.send(t, "hello") // a client may send the body anyway once it has a final status
	body, err := io.ReadAll(resp.Body)
	if err != nil || string(body) != big {
		t.Fatalf("body: %d bytes, %v, contains 100 Continue: %v", len(body), err, strings.Contains(string(body), "100 Continue"))
	}
}

func TestHTTP10(t *testing.T) {
	big := strings.Repeat("x", 8<<10)
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			io.WriteString(w, big)
			return
		}
		echo(w, r)
	})})

	t.Run("without keep-alive: not chunked, then closed", func(t *testing.T) {
		for _, path := range []string{"/small", "/big"} {
			c := dial(t, ts.addr)
			c.send(t, "GET "+path+" HTTP/1.0\r\n\r\n")
			resp, body := c.read(t, "GET")
			if resp.StatusCode != 200 || resp.TransferEncoding != nil || !resp.Close {
				t.Fatalf("%s: %d TE=%v close=%v", path, resp.StatusCode, resp.TransferEncoding, resp.Close)
			}
			if path == "/big" && body != big || path == "/small" && (body != "GET /small len=0 body=" || resp.ContentLength != int64(len(body))) {
				t.Fatalf("%s: %d bytes, ContentLength %d", path, len(body), resp.ContentLength)
			}
			c.expectClosed(t)
		}
	})
	t.Run("keep-alive with a known length", func(t *testing.T) {
		c := dial(t, ts.addr)
		for i := range 2 {
			c.send(t, "POST /k HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok")
			resp, body := c.read(t, "POST")
			if resp.StatusCode != 200 || body != "POST /k len=2 body=ok" || resp.Close ||
				resp.Header.Get("Connection") != "keep-alive" || resp.ContentLength != int64(len(body)) {
				t.Fatalf("request %d: %d %q close=%v Connection=%q", i, resp.StatusCode, body, resp.Close, resp.Header.Get("Connection"))
			}
		}
		c.send(t, "GET /big HTTP/1.0\r\nConnection: keep-alive\r\n\r\n") // no length to give: ends with the connection
		if resp, body := c.read(t, "GET"); body != big || !resp.Close || resp.TransferEncoding != nil {
			t.Fatalf("big: %d bytes close=%v TE=%v", len(body), resp.Close, resp.TransferEncoding)
		}
		c.expectClosed(t)
	})
}

func TestBodylessResponses(t *testing.T) {
	writeErr := make(chan error, 1)
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/204":
			w.WriteHeader(http.StatusNoContent)
			_, err := io.WriteString(w, "not sent")
			writeErr <- err
		case "/304":
			w.Header().Set("Content-Length", "10")
			w.WriteHeader(http.StatusNotModified)
		default:
			io.WriteString(w, "hello")
		}
	})})
	c := dial(t, ts.addr)
	// Pipelined: a body sent after any of them would be read as the next response's head.
	c.send(t, "HEAD /h HTTP/1.1\r\nHost: h\r\n\r\nGET /204 HTTP/1.1\r\nHost: h\r\n\r\n"+
		"GET /304 HTTP/1.1\r\nHost: h\r\n\r\nGET /g HTTP/1.1\r\nHost: h\r\n\r\n")
	resp, body := c.read(t, "HEAD")
	if resp.StatusCode != 200 || body != "" || resp.Header.Get("Content-Length") != "5" {
		t.Fatalf("HEAD: %d %q Content-Length %q", resp.StatusCode, body, resp.Header.Get("Content-Length"))
	}
	for _, code := range []int{204, 304} {
		resp, body = c.read(t, "GET")
		if resp.StatusCode != code || body != "" || resp.Header.Get("Content-Length") != "" || resp.TransferEncoding != nil {
			t.Fatalf("%d: got %d %q %v", code, resp.StatusCode, body, resp.Header)
		}
	}
	if err := <-writeErr; !errors.Is(err, http.ErrBodyNotAllowed) {
		t.Fatalf("Write after 204: %v, want ErrBodyNotAllowed", err)
	}
	if resp, body = c.read(t, "GET"); resp.StatusCode != 200 || body != "hello" {
		t.Fatalf("GET after them: %d %q", resp.StatusCode, body)
	}
}

func TestMalformedRequests(t *testing.T) {
	const secret = "secret-token-123"
	var called atomic.Bool
	ts := start(t, &Server{MaxHeaderBytes: 4 << 10, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		called.Store(true)
	})})
	key := "api-key: " + secret + "\r\n"
	tests := []struct {
		name string
		raw  string
		code int
		err  string
	}{
		{"missing Host on HTTP/1.1", "GET / HTTP/1.1\r\n" + key + "\r\n", 400, "BadRequest"},
		{"two Host headers", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n" + key + "\r\n", 400, "BadRequest"},
		{"length and chunked", "POST / HTTP/1.1\r\nHost: h\r\n" + key + "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "BadRequest"},
		{"invalid Content-Length", "POST / HTTP/1.1\r\nHost: h\r\n" + key + "Content-Length: 12abc\r\n\r\n", 400, "BadRequest"},
		{"bad request line", "GET /" + secret + "\r\nHost: h\r\n\r\n", 400, "BadRequest"},
		{"control char in a value", "GET / HTTP/1.1\r\nHost: h\r\napi-key: " + secret + "\x01\r\n\r\n", 400, "BadRequest"},
		{"obsolete line folding", "GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n " + secret + "\r\n\r\n", 400, "BadRequest"},
		{"HTTP/2.0", "GET / HTTP/2.0\r\nHost: h\r\n" + key + "\r\n", 505, "HTTPVersionNotSupported"},
		{"headers over MaxHeaderBytes", "GET / HTTP/1.1\r\nHost: h\r\n" + key + "X-Big: " + strings.Repeat("b", 16<<10) + "\r\n\r\n", 431, "RequestHeaderFieldsTooLarge"},
		{"too many header lines", "GET / HTTP/1.1\r\nHost: h\r\n" + key + strings.Repeat("X:\r\n", 300) + "\r\n", 431, "RequestHeaderFieldsTooLarge"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, ts.addr)
			c.send(t, tt.raw)
			resp, body := c.read(t, "GET")
			expectAzureError(t, resp, body, tt.code, tt.err)
			if strings.Contains(body, secret) || strings.Contains(fmt.Sprint(resp.Header), secret) {
				t.Fatalf("the answer echoes the request: %v %s", resp.Header, body)
			}
			c.expectClosed(t)
		})
	}
	if called.Load() {
		t.Fatal("a malformed request reached the handler")
	}
}

func TestLongHeaderLineAccepted(t *testing.T) {
	// Longer than the 4 KiB read buffer, within MaxHeaderBytes.
	token := "Bearer " + strings.Repeat("t", 10<<10)
	ts := start(t, &Server{MaxHeaderBytes: 64 << 10, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == token && r.Header.Get("X-After") == "1" {
			io.WriteString(w, "intact")
		}
	})})
	req, _ := http.NewRequest("GET", ts.url("/"), nil)
	req.Header.Set("Authorization", token)
	req.Header.Set("X-After", "1")
	resp, err := client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "intact" {
		t.Fatalf("got %d %q", resp.StatusCode, b)
	}
}

func TestResponseHeaderNoSplitting(t *testing.T) {
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Test", "a\r\nX-Injected: yes")
		w.Header().Set("X-Lf", "b\nSet-Cookie: s=1")
		w.Header()["Bad Name\r\nX-Injected"] = []string{"no"}
		io.WriteString(w, "body")
	})})
	c := dial(t, ts.addr)
	c.send(t, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	resp, body := c.read(t, "GET")
	if got := resp.Header["X-Test"]; len(got) != 1 || got[0] != "a  X-Injected: yes" {
		t.Errorf("X-Test = %q", got)
	}
	if got := resp.Header["X-Lf"]; len(got) != 1 || got[0] != "b Set-Cookie: s=1" {
		t.Errorf("X-Lf = %q", got)
	}
	if resp.Header["X-Injected"] != nil || resp.Header["Set-Cookie"] != nil || body != "body" {
		t.Errorf("injected: %v, body %q", resp.Header, body)
	}
}

func TestResponseFraming(t *testing.T) {
	large := strings.Repeat("L", 5000)
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/small":
			io.WriteString(w, "small ")
			io.WriteString(w, "body")
		case "/large":
			io.WriteString(w, large[:1000])
			io.WriteString(w, large[1000:])
		case "/flushed":
			io.WriteString(w, "flushed")
			w.(http.Flusher).Flush()
		case "/length":
			w.Header().Set("Content-Length", strconv.Itoa(len(large)))
			io.WriteString(w, large)
		case "/empty":
		case "/close":
			w.Header().Set("Connection", "close")
			io.WriteString(w, "bye")
		}
	})})
	tests := []struct {
		path    string
		body    string
		length  int64
		chunked bool
	}{
		{"/small", "small body", 10, false},
		{"/large", large, -1, true},
		{"/flushed", "flushed", -1, true},
		{"/length", large, 5000, false},
		{"/empty", "", 0, false},
	}
	c := dial(t, ts.addr)
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			c.send(t, "GET "+tt.path+" HTTP/1.1\r\nHost: h\r\n\r\n")
			resp, body := c.read(t, "GET")
			chunked := len(resp.TransferEncoding) == 1 && resp.TransferEncoding[0] == "chunked"
			if body != tt.body || resp.ContentLength != tt.length || chunked != tt.chunked || resp.Close {
				t.Fatalf("got %d bytes, ContentLength %d, chunked %v, close %v; want %d bytes, %d, %v",
					len(body), resp.ContentLength, chunked, resp.Close, len(tt.body), tt.length, tt.chunked)
			}
		})
	}
	// A handler's Connection: close is honoured.
	c.send(t, "GET /close HTTP/1.1\r\nHost: h\r\n\r\n")
	if resp, body := c.read(t, "GET"); body != "bye" || !resp.Close {
		t.Fatalf("got %q close=%v", body, resp.Close)
	}
	c.expectClosed(t)
}

// TestContentLengthTheFramingDidNotTake: a Content-Length set after WriteHeader, or one with a
// sign, is not the body's length; it must not go out beside the framing actually used.
func TestContentLengthTheFramingDidNotTake(t *testing.T) {
	large := strings.Repeat("L", 5000)
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/late":
			w.WriteHeader(http.StatusOK)
			w.Header().Set("Content-Length", "5000")
			io.WriteString(w, large)
		case "/signed":
			w.Header().Set("Content-Length", "+4")
			io.WriteString(w, "body")
		}
	})})
	for _, tt := range []struct{ path, want, notWant string }{
		{"/late", "Transfer-Encoding: chunked\r\n", "Content-Length"},
		{"/signed", "Content-Length: 4\r\n", "+4"},
	} {
		c := dial(t, ts.addr)
		c.send(t, "GET "+tt.path+" HTTP/1.1\r\nHost: h\r\n\r\n")
		var head strings.Builder
		for {
			line, err := c.br.ReadString('\n')
			if err != nil {
				t.Fatalf("%s: %v after %q", tt.path, err, head.String())
			}
			head.WriteString(line)
			if line == "\r\n" {
				break
			}
		}
		if h := head.String(); !strings.Contains(h, tt.want) || strings.Contains(h, tt.notWant) {
			t.Errorf("%s: head %q, want %q and no %q", tt.path, h, tt.want, tt.notWant)
		}
	}
}

func TestFlushDeliversBeforeTheHandlerReturns(t *testing.T) {
	proceed := make(chan struct{})
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "data: first\n\n")
		if err := http.NewResponseController(w).Flush(); err != nil {
			return
		}
		select {
		case <-proceed: // the client has read the first event
		case <-time.After(5 * time.Second):
			return
		}
		io.WriteString(w, "data: second\n\n")
	})})
	resp, err := client(t).Get(ts.url("/stream"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make([]byte, len("data: first\n\n"))
	if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "data: first\n\n" {
		t.Fatalf("first event: %q %v", first, err)
	}
	close(proceed)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "data: second\n\n" {
		t.Fatalf("rest: %q %v", rest, err)
	}
}

// EndBody gives the client the whole answer, its end included, while the handler still runs;
// the connection stays usable for the next request.
func TestEndBodyCompletesTheResponseBeforeTheHandlerReturns(t *testing.T) {
	clientDone := make(chan struct{}, 1)
	lateWrite := make(chan error, 1)
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "data: a\n\n")
		if r.URL.Path == "/stream" {
			http.NewResponseController(w).Flush() // headers out: the body is chunked
		}
		io.WriteString(w, "data: b\n\n")
		if err := w.(interface{ EndBody() error }).EndBody(); err != nil {
			t.Errorf("EndBody: %v", err)
		}
		select {
		case <-clientDone: // the client read the whole body while the handler runs
		case <-time.After(5 * time.Second):
		}
		_, err := io.WriteString(w, "late")
		lateWrite <- err
	})})
	cl := client(t)
	for _, path := range []string{"/stream", "/held", "/stream"} {
		resp, err := cl.Get(ts.url(path))
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(body) != "data: a\n\ndata: b\n\n" {
			t.Fatalf("%s: body %q, %v", path, body, err)
		}
		chunked := len(resp.TransferEncoding) == 1 && resp.TransferEncoding[0] == "chunked"
		if want := path == "/stream"; chunked != want || !want && resp.ContentLength != int64(len(body)) {
			t.Errorf("%s: chunked %v, Content-Length %d", path, chunked, resp.ContentLength)
		}
		clientDone <- struct{}{}
		if err := <-lateWrite; err == nil {
			t.Errorf("%s: a write after EndBody succeeded", path)
		}
	}
	if n := ts.accepted.Load(); n != 1 {
		t.Errorf("%d connections for three requests, want 1", n)
	}
}

func TestHandlerPanic(t *testing.T) {
	var logs testio.Buffer
	ts := start(t, &Server{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/panic":
			panic("boom")
		case "/abort":
			io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		io.WriteString(w, "ok")
	})})

	c := dial(t, ts.addr)
	c.send(t, "GET /panic HTTP/1.1\r\nHost: h\r\n\r\n")
	if resp, err := http.ReadResponse(c.br, nil); err == nil {
		t.Fatalf("a panicking handler answered %d", resp.StatusCode)
	}
	if !strings.Contains(logs.String(), "panic serving request") || !strings.Contains(logs.String(), "boom") {
		t.Fatalf("panic not logged: %q", logs.String())
	}

	// Other connections are still served.
	resp, err := client(t).Get(ts.url("/ok"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "ok" {
		t.Fatalf("after a panic: %q", b)
	}

	logged := logs.String()
	resp, err = client(t).Get(ts.url("/abort"))
	if err != nil {
		t.Fatal(err)
	}
	b, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil || string(b) != "partial" {
		t.Fatalf("aborted body: %q, %v; want \"partial\" and an error", b, err)
	}
	if logs.String() != logged {
		t.Fatalf("ErrAbortHandler was logged: %q", logs.String())
	}
}

func TestCallerDisconnectCancelsTheRequest(t *testing.T) {
	type result struct {
		err error
		at  time.Time
	}
	started := make(chan string, 1)
	done := make(chan result, 1)
	ts := start(t, &Server{WatchAfter: watchAfter, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		started <- string(b)
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
		done <- result{r.Context().Err(), time.Now()} // and returns without writing
	})})
	tests := []struct {
		name string
		raw  string
		body string
	}{
		{"no body", "GET /wait HTTP/1.1\r\nHost: h\r\n\r\n", ""},
		{"body read", "POST /wait HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody", "body"},
		{"chunked body read", "POST /wait HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n", "body"},
	}
	// How a caller leaves: closing, or half-closing (it may still read, but is sent nothing
	// more), each with or without a stray pipelined byte sent first (in the request's packet,
	// or after the watch began).
	leaves := []struct {
		name       string
		stray      string
		strayLater bool
		half       bool
	}{
		{"close", "", false, false},
		{"half-close", "", false, true},
		{"stray byte then close", "G", false, false},
		{"stray byte then half-close", "G", false, true},
		{"stray byte later then close", "G", true, false},
		{"stray byte later then half-close", "G", true, true},
	}
	for _, tt := range tests {
		for _, leave := range leaves {
			t.Run(tt.name+", "+leave.name, func(t *testing.T) {
				c := dial(t, ts.addr)
				raw := tt.raw
				if !leave.strayLater {
					raw += leave.stray
				}
				c.send(t, raw)
				if got := <-started; got != tt.body {
					t.Fatalf("handler read %q", got)
				}
				if leave.strayLater {
					time.Sleep(2 * watchAfter) // the watch is reading
					c.send(t, leave.stray)
				}
				closed := time.Now()
				if leave.half {
					c.Conn.(*net.TCPConn).CloseWrite()
				} else {
					c.Close()
				}
				r := <-done
				if !errors.Is(r.err, context.Canceled) {
					t.Fatalf("context error %v, want Canceled", r.err)
				}
				if d := r.at.Sub(closed); d > watchAfter+slack {
					t.Fatalf("released %v after the caller left", d)
				}
				if leave.half {
					// The handler wrote nothing: the caller gets nothing, not a made-up answer.
					c.SetReadDeadline(time.Now().Add(2 * time.Second))
					if b, err := io.ReadAll(c.Conn); len(b) != 0 || err != nil {
						t.Fatalf("a caller that left was sent %q (%v)", b, err)
					}
				}
			})
		}
	}
}

func TestWatchKeepsPipelinedBytes(t *testing.T) {
	release := make(chan struct{}, 1)
	started := make(chan struct{}, 1)
	ts := start(t, &Server{WatchAfter: watchAfter, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			select {
			case <-release:
			case <-time.After(5 * time.Second):
			}
		}
		fmt.Fprintf(w, "%s ctx=%v", r.URL.Path, r.Context().Err())
	})})
	const second = "GET /fast HTTP/1.1\r\nHost: h\r\n\r\n"

	t.Run("written together", func(t *testing.T) {
		c := dial(t, ts.addr)
		c.send(t, "GET /slow HTTP/1.1\r\nHost: h\r\n\r\n"+second)
		<-started
		time.Sleep(3 * watchAfter) // past WatchAfter
		release <- struct{}{}
		expectPair(t, c)
	})
	t.Run("written while the watch reads", func(t *testing.T) {
		c := dial(t, ts.addr)
		c.send(t, "GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
		<-started
		time.Sleep(3 * watchAfter) // the watch is reading now
		c.send(t, second)
		time.Sleep(3 * watchAfter) // and has taken a byte of the second request
		if !ts.watchHoldsByte() {
			t.Fatal("the watch did not take the pipelined byte: the case is not exercised")
		}
		release <- struct{}{}
		expectPair(t, c)
	})
}

func TestResponseControllerDeadlines(t *testing.T) {
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		fmt.Fprintf(w, "read=%v write=%v", rc.SetReadDeadline(time.Now().Add(time.Minute)), rc.SetWriteDeadline(time.Now().Add(time.Minute)))
	})})
	resp, err := client(t).Get(ts.url("/"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "read=<nil> write=<nil>" {
		t.Fatalf("got %q", b)
	}
}

// TestBodyDeadlineDoesNotEndTheWatch: a handler that bounds the body's reading with a deadline
// and clears it (as the gateway does) keeps its request while it runs past that deadline; the
// body comes after the head, so it is not in the read buffer and the deadline is really set.
// Both the deadline's end and the watch's start fall inside the handler's wait.
func TestBodyDeadlineDoesNotEndTheWatch(t *testing.T) {
	const deadline = 150 * time.Millisecond
	ts := start(t, &Server{WatchAfter: watchAfter, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Now().Add(deadline))
		b, err := io.ReadAll(r.Body)
		_ = rc.SetReadDeadline(time.Time{})
		if err != nil {
			t.Errorf("reading the body: %v", err)
		}
		select {
		case <-r.Context().Done():
			fmt.Fprintf(w, "cancelled after %q", b)
		case <-time.After(3 * deadline):
			fmt.Fprintf(w, "served %q", b)
		}
	})})
	c := dial(t, ts.addr)
	c.send(t, "POST /slow HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\n")
	time.Sleep(20 * time.Millisecond)
	c.send(t, "body")
	if _, body := c.read(t, http.MethodPost); body != `served "body"` {
		t.Fatalf("got %q", body)
	}
}

func TestEarlyAnswerToAnUnreadLargeBody(t *testing.T) {
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		io.WriteString(w, `{"error":{"code":"TooLarge","message":"too large"}}`)
	})})
	body := bytes.Repeat([]byte("a"), 2<<20)
	resp, err := client(t).Post(ts.url("/big"), "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("the client lost the answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(b), "TooLarge") || !resp.Close {
		t.Fatalf("got %d %q close=%v", resp.StatusCode, b, resp.Close)
	}
}

// An early answer to a small body that came with its head (a 404, a 405) keeps the connection:
// the unread body is dropped from the read buffer, not taken for the next request.
func TestEarlyAnswerToAnUnreadBufferedBody(t *testing.T) {
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/echo" {
			echo(w, r)
			return
		}
		w.WriteHeader(http.StatusNotFound)
	})})
	c := dial(t, ts.addr)
	c.send(t, "POST /nowhere HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nGET / HTTP/") // a body that looks like a request
	if resp, _ := c.read(t, "POST"); resp.StatusCode != http.StatusNotFound || resp.Close {
		t.Fatalf("first answer: %d, close=%v", resp.StatusCode, resp.Close)
	}
	c.send(t, "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nnext")
	if resp, body := c.read(t, "POST"); resp.StatusCode != http.StatusOK || !strings.Contains(body, "next") {
		t.Fatalf("second answer: %d %q", resp.StatusCode, body)
	}
	if n := ts.accepted.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

func TestReadHeaderTimeout(t *testing.T) {
	const timeout = 50 * time.Millisecond
	ts := start(t, &Server{ReadHeaderTimeout: timeout, Handler: http.HandlerFunc(echo)})
	c := dial(t, ts.addr)
	// Trickle the head, a line every 10 ms, never ending it.
	stop := make(chan struct{})
	defer close(stop)
	began := time.Now()
	go func() {
		c.Write([]byte("GET / HTTP/1.1\r\nHost: h\r\n"))
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if _, err := c.Write([]byte("X-Slow: 1\r\n")); err != nil {
				return
			}
		}
	}()
	c.expectClosed(t)
	if d := time.Since(began); d < timeout-10*time.Millisecond || d > timeout+slack {
		t.Fatalf("closed after %v, want about %v", d, timeout)
	}
}

func TestIdleTimeout(t *testing.T) {
	const timeout = 50 * time.Millisecond
	ts := start(t, &Server{IdleTimeout: timeout, Handler: http.HandlerFunc(echo)})
	c := dial(t, ts.addr)
	c.send(t, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	if resp, _ := c.read(t, "GET"); resp.StatusCode != 200 || resp.Close {
		t.Fatalf("got %d close=%v", resp.StatusCode, resp.Close)
	}
	idle := time.Now()
	c.expectClosed(t)
	if d := time.Since(idle); d < timeout-10*time.Millisecond || d > timeout+slack {
		t.Fatalf("idle connection closed after %v, want about %v", d, timeout)
	}
}

func TestShutdown(t *testing.T) {
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			<-release
		}
		io.WriteString(w, "done "+r.URL.Path)
	})})
	idle := dial(t, ts.addr)
	idle.send(t, "GET /idle HTTP/1.1\r\nHost: h\r\n\r\n")
	if _, body := idle.read(t, "GET"); body != "done /idle" {
		t.Fatalf("idle connection's request: %q", body)
	}
	busy := dial(t, ts.addr)
	busy.send(t, "GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
	<-started

	shut := make(chan error, 1)
	go func() { shut <- ts.Shutdown(context.Background()) }()
	if err := ts.serveErr(); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve returned %v, want ErrServerClosed", err)
	}
	idle.expectClosed(t) // closed at once, while a request is still in flight
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v before the request in flight ended", err)
	default:
	}
	close(release)
	resp, body := busy.read(t, "GET")
	if resp.StatusCode != 200 || body != "done /slow" || !resp.Close {
		t.Fatalf("in-flight answer: %d %q close=%v", resp.StatusCode, body, resp.Close)
	}
	busy.expectClosed(t)
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if _, err := net.Dial("tcp", ts.addr); err == nil {
		t.Fatal("still accepting after Shutdown")
	}
}

func TestClose(t *testing.T) {
	started := make(chan struct{}, 1)
	released := make(chan error, 1)
	ts := start(t, &Server{WatchAfter: watchAfter, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
			released <- r.Context().Err()
		}
	})})
	idle := dial(t, ts.addr)
	idle.send(t, "GET /idle HTTP/1.1\r\nHost: h\r\n\r\n")
	idle.read(t, "GET")
	busy := dial(t, ts.addr)
	busy.send(t, "GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
	<-started
	if err := ts.Close(); err != nil {
		t.Fatal(err)
	}
	busy.expectClosed(t) // no answer
	idle.expectClosed(t)
	if err := <-released; !errors.Is(err, context.Canceled) {
		t.Fatalf("in-flight context: %v, want Canceled", err)
	}
	if err := ts.serveErr(); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve returned %v", err)
	}
	if err := ts.Serve(ts.ln); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve after Close: %v", err)
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	base := runtime.NumGoroutine()
	ts := start(t, &Server{WatchAfter: watchAfter, IdleTimeout: time.Minute, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/wait" {
			<-r.Context().Done() // released by the watch when the caller leaves
			return
		}
		echo(w, r)
		w.(http.Flusher).Flush()
	})})
	hc := client(t)
	for i := range 10 {
		resp, err := hc.Post(ts.url("/p"), "text/plain", strings.NewReader(strings.Repeat("b", i*1000)))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		c := dial(t, ts.addr)
		c.send(t, "GET /wait HTTP/1.1\r\nHost: h\r\n\r\n")
		c.Close()
		c = dial(t, ts.addr)
		c.send(t, "GET /p HTTP/1.1\r\nHost: h\r\n\r\n")
		c.read(t, "GET")
		c.Close()
	}
	hc.CloseIdleConnections()
	if err := ts.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	ts.serveErr()
	var n int
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if n = runtime.NumGoroutine(); n <= base+2 {
			return
		}
	}
	t.Fatalf("%d goroutines after Shutdown, %d before", n, base)
}

// echo answers "METHOD /path len=ContentLength body=..." after reading the whole body.
func echo(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "body: "+err.Error(), http.StatusBadRequest)
		return
	}
	fmt.Fprintf(w, "%s %s len=%d body=%s", r.Method, r.URL.Path, r.ContentLength, b)
}

// expectPair reads the answers to /slow and then /fast on c, both with their contexts alive.
func expectPair(t *testing.T, c *rawConn) {
	t.Helper()
	for _, want := range []string{"/slow ctx=<nil>", "/fast ctx=<nil>"} {
		resp, body := c.read(t, "GET")
		if resp.StatusCode != 200 || body != want {
			t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, want)
		}
	}
}

// expectAzureError checks an answer in the Azure OpenAI error shape that closes the connection.
func expectAzureError(t *testing.T, resp *http.Response, body string, status int, code string) {
	t.Helper()
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	if resp.StatusCode != status || e.Error.Code != code || e.Error.Message == "" {
		t.Fatalf("got %d %q, want %d with code %q", resp.StatusCode, body, status, code)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" || !resp.Close {
		t.Fatalf("Content-Type %q, close %v", ct, resp.Close)
	}
}

type testServer struct {
	*Server
	ln       net.Listener
	addr     string
	accepted *atomic.Int32
	served   chan struct{}
	err      error
}

// start serves s on a loopback port until the test ends.
func start(t *testing.T, s *Server) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: ln}
	ts := &testServer{Server: s, ln: cl, addr: ln.Addr().String(), accepted: &cl.n, served: make(chan struct{})}
	go func() {
		ts.err = s.Serve(cl)
		close(ts.served)
	}()
	t.Cleanup(func() {
		s.Close()
		ln.Close()
		<-ts.served
	})
	return ts
}

func (ts *testServer) url(path string) string { return "http://" + ts.addr + path }

// watchHoldsByte reports whether a connection's watch has read a byte of a next request.
func (ts *testServer) watchHoldsByte() bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for c := range ts.conns {
		c.watchMu.Lock()
		held := len(c.r.stash) > 0
		c.watchMu.Unlock()
		if held {
			return true
		}
	}
	return false
}

// serveErr waits for Serve to return and gives its error.
func (ts *testServer) serveErr() error {
	select {
	case <-ts.served:
		return ts.err
	case <-time.After(5 * time.Second):
		return errors.New("Serve did not return")
	}
}

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	n atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// client is a net/http client of its own, so that connection reuse is the test's alone.
func client(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// rawConn writes requests as bytes and reads responses with http.ReadResponse.
type rawConn struct {
	net.Conn
	br *bufio.Reader
}

func dial(t *testing.T, addr string) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(10 * time.Second)) // a failing test fails rather than hangs
	t.Cleanup(func() { nc.Close() })
	return &rawConn{Conn: nc, br: bufio.NewReader(nc)}
}

func (c *rawConn) send(t *testing.T, s string) {
	t.Helper()
	if _, err := io.WriteString(c.Conn, s); err != nil {
		t.Fatal(err)
	}
}

// read reads one response to a request of the given method, and its whole body.
func (c *rawConn) read(t *testing.T, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	return resp, string(b)
}

// expectClosed waits for the server to close the connection without sending anything more.
func (c *rawConn) expectClosed(t *testing.T) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.br.Read(make([]byte, 1))
	if n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection not closed: read %d bytes, %v", n, err)
	}
}

// hijackAndSwitch takes the connection over and sends a 101, as a protocol switch does.
func hijackAndSwitch(t *testing.T, w http.ResponseWriter) (net.Conn, *bufio.ReadWriter) {
	nc, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		t.Errorf("Hijack: %v", err)
		return nil, nil
	}
	rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
	if err := rw.Flush(); err != nil {
		t.Errorf("writing the 101: %v", err)
	}
	return nc, rw
}

// readSwitch reads a 101 head from c and fails unless that is what came.
func (c *rawConn) readSwitch(t *testing.T) {
	t.Helper()
	line, err := c.br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 101 ") {
		t.Fatalf("status line %q, %v", line, err)
	}
	for {
		line, err = c.br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == "\r\n" {
			return
		}
	}
}

// TestHijack: the handler gets the connection with every byte the server had read past the
// request (here read by the caller-left watch, which had started), the watch no longer
// cancels the request when the caller closes, and the server stops counting the connection.
func TestHijack(t *testing.T) {
	type ended struct {
		ctxErr error
		conns  int
	}
	done := make(chan ended, 1)
	var ts *testServer
	ts = start(t, &Server{WatchAfter: watchAfter, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(5 * watchAfter) // the watch is reading the connection by now
		nc, rw := hijackAndSwitch(t, w)
		if nc == nil {
			return
		}
		defer nc.Close()
		ts.mu.Lock()
		conns, hijacked := len(ts.conns), len(ts.hijacked)
		ts.mu.Unlock()
		if conns != 0 || hijacked != 1 {
			t.Errorf("after Hijack the server counts %d connections and %d hijacked, want 0 and 1", conns, hijacked)
		}
		for {
			line, err := rw.ReadString('\n')
			if err != nil {
				done <- ended{r.Context().Err(), conns}
				return
			}
			rw.WriteString("echo: " + line)
			rw.Flush()
		}
	})})
	c := dial(t, ts.addr)
	// "first" comes with the head (the request reader buffers it); "early" comes while the
	// handler runs, before the switch (the watch reads it).
	c.send(t, "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nfirst\n")
	time.Sleep(2 * watchAfter)
	c.send(t, "early\n")
	c.readSwitch(t)
	for _, want := range []string{"first", "early", "later"} {
		if want == "later" {
			c.send(t, "later\n")
		}
		if got, err := c.br.ReadString('\n'); err != nil || got != "echo: "+want+"\n" {
			t.Fatalf("got %q, %v; want the echo of %q", got, err, want)
		}
	}
	c.Close()
	select {
	case e := <-done:
		if e.ctxErr != nil {
			t.Fatalf("the request's context ended (%v) when the caller closed a hijacked connection", e.ctxErr)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the handler did not see the caller close")
	}
	deadline := time.Now().Add(2 * time.Second)
	for ts.wakeIdle() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the hijacked connection is still counted after its handler returned")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestHijackRefused(t *testing.T) {
	results := make(chan string, 3)
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		switch r.URL.Path {
		case "/started":
			w.WriteHeader(http.StatusOK)
			_, _, err := rc.Hijack()
			results <- fmt.Sprint(errors.Is(err, errHijackStarted))
		case "/body":
			_, _, err := rc.Hijack()
			results <- fmt.Sprint(errors.Is(err, errHijackBody))
			io.Copy(io.Discard, r.Body)
		case "/twice":
			nc, _, err := rc.Hijack()
			if err != nil {
				results <- err.Error()
				return
			}
			defer nc.Close()
			_, _, err2 := rc.Hijack()
			_, err3 := w.Write([]byte("x"))
			results <- fmt.Sprint(errors.Is(err2, http.ErrHijacked) && errors.Is(err3, http.ErrHijacked))
		}
	})})
	c := dial(t, ts.addr)
	c.send(t, "GET /started HTTP/1.1\r\nHost: h\r\n\r\n")
	if resp, _ := c.read(t, "GET"); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	c.send(t, "POST /body HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
	c.send(t, "3\r\nabc\r\n0\r\n\r\n")
	c.read(t, "POST")
	c.send(t, "GET /twice HTTP/1.1\r\nHost: h\r\n\r\n")
	for _, what := range []string{"after the response started", "with the body unread", "twice, or a write after it"} {
		if got := <-results; got != "true" {
			t.Fatalf("Hijack %s: %s", what, got)
		}
	}
}

// TestShutdownWithHijackedConnection: Shutdown tells a hijacked connection's handler through its
// context (cause ErrServerClosed), leaves the connection to it (the handler still writes its
// goodbye), and returns once the handler has.
func TestShutdownWithHijackedConnection(t *testing.T) {
	for _, how := range []string{"Shutdown", "Close"} {
		t.Run(how, func(t *testing.T) {
			switched := make(chan struct{})
			returned := make(chan time.Time, 1)
			ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				defer func() { returned <- time.Now() }()
				nc, rw := hijackAndSwitch(t, w)
				if nc == nil {
					return
				}
				defer nc.Close()
				close(switched)
				<-r.Context().Done()
				time.Sleep(50 * time.Millisecond) // a goodbye that takes a while
				rw.WriteString("bye: " + context.Cause(r.Context()).Error() + "\n")
				rw.Flush()
			})})
			c := dial(t, ts.addr)
			c.send(t, "GET /ws HTTP/1.1\r\nHost: h\r\n\r\n")
			c.readSwitch(t)
			<-switched
			var shutDone time.Time
			if how == "Shutdown" {
				if err := ts.Shutdown(context.Background()); err != nil {
					t.Fatal(err)
				}
				shutDone = time.Now()
			} else if err := ts.Close(); err != nil {
				t.Fatal(err)
			}
			if got, err := c.br.ReadString('\n'); err != nil || got != "bye: "+ErrServerClosed.Error()+"\n" {
				t.Fatalf("got %q, %v; want the handler's goodbye", got, err)
			}
			c.expectClosed(t)
			ret := <-returned
			if how == "Shutdown" && shutDone.Before(ret) {
				t.Fatal("Shutdown returned before the hijacked connection's handler did")
			}
		})
	}
}
