package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/aoai-failover/gateway/handler/internal/auth"
	"github.com/aoai-failover/gateway/handler/internal/config"
	"github.com/aoai-failover/gateway/handler/internal/server"
)

const callerKey = "caller-key-0123456789"

// wsEcho is a Realtime backend: it accepts the WebSocket, answers every message with the same
// type and "backend:" before it, closes on "close-please", drops the connection on
// "drop-please", and reports how its side ended.
func wsEcho(ended chan<- error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionContextTakeover})
		if err != nil {
			return
		}
		c.SetReadLimit(1 << 20)
		ctx := context.Background()
		for {
			typ, data, err := c.Read(ctx)
			if err != nil {
				if ended != nil {
					ended <- err
				}
				c.CloseNow()
				return
			}
			switch string(data) {
			case "close-please":
				c.Close(websocket.StatusNormalClosure, "bye")
				return
			case "drop-please":
				c.CloseNow()
				return
			}
			if err := c.Write(ctx, typ, append([]byte("backend:"), data...)); err != nil {
				return
			}
		}
	}
}

// keySource serves the client keys' secret.
type keySource map[string]string

func (k keySource) Key(name string) (string, bool) { v, ok := k[name]; return v, ok }

// rtGateway is the gateway behind its own server, with the app's order: the Realtime
// credentials taken, the caller authenticated, then ServeRealtime.
type rtGateway struct {
	*testGateway
	srv      *server.Server
	addr     string
	log      *lines
	handling sync.WaitGroup
}

func newRealtimeGateway(t *testing.T, tune func(*config.Routing), backends ...*backend) *rtGateway {
	t.Helper()
	g := &rtGateway{testGateway: newGateway(t, tune, backends...), log: &lines{}}
	g.gw.opt.RequestLog = g.log
	callers := auth.Callers{Keys: &auth.ClientKeys{Source: keySource{"keys": `{"app1":"` + callerKey + `"}`}, Secret: "keys",
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}}
	g.srv = &server.Server{WatchAfter: 10 * time.Millisecond, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.handling.Add(1)
		defer g.handling.Done()
		if !IsRealtimePath(r.URL.Path) {
			http.NotFound(w, r)
			return
		}
		TakeRealtimeCredentials(r)
		app, rej := callers.Authenticate(r)
		if rej != nil {
			rej.Write(w)
			return
		}
		g.gw.ServeRealtime(w, r, app)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g.addr = ln.Addr().String()
	served := make(chan struct{})
	go func() { g.srv.Serve(ln); close(served) }()
	t.Cleanup(func() { g.srv.Close(); <-served })
	return g
}

// dial opens a session as an SDK does; hdr are header name and value pairs.
func (g *rtGateway) dial(t *testing.T, pathQuery string, hdr ...string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	h := http.Header{}
	for i := 0; i+1 < len(hdr); i += 2 {
		h.Set(hdr[i], hdr[i+1])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws://"+g.addr+pathQuery, &websocket.DialOptions{
		HTTPHeader: h, HTTPClient: &http.Client{Transport: &http.Transport{}},
		CompressionMode: websocket.CompressionContextTakeover,
	})
	if c != nil {
		c.SetReadLimit(1 << 20)
		t.Cleanup(func() { c.CloseNow() })
	}
	return c, resp, err
}

// logLine is the session's request log line, once the session has ended.
func (g *rtGateway) logLine(t *testing.T) map[string]any {
	t.Helper()
	done := make(chan struct{})
	go func() { g.handling.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the session did not end")
	}
	lines := strings.Split(strings.TrimSpace(g.log.String()), "\n")
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &m); err != nil {
		t.Fatalf("log line %q: %v", lines[len(lines)-1], err)
	}
	return m
}

func exchange(t *testing.T, c *websocket.Conn, typ websocket.MessageType, msg []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Write(ctx, typ, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	gotTyp, got, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if gotTyp != typ || !bytes.Equal(got, append([]byte("backend:"), msg...)) {
		t.Fatalf("got %v %d bytes %q..., want the backend's echo of %v %d bytes", gotTyp, len(got), got[:min(len(got), 40)], typ, len(msg))
	}
}

// closeStatus waits for the next read on c to fail and returns the close frame it got.
func closeStatus(t *testing.T, c *websocket.Conn, within time.Duration) (websocket.StatusCode, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	_, _, err := c.Read(ctx)
	var ce websocket.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("read ended with %v, want a close frame within %v", err, within)
	}
	return ce.Code, ce.Reason
}

func waitEnded(t *testing.T, ended <-chan error, within time.Duration) error {
	t.Helper()
	select {
	case err := <-ended:
		return err
	case <-time.After(within):
		t.Fatalf("the backend's connection did not end within %v", within)
		return nil
	}
}

// TestRealtimeRelay: text and binary frames (a large one too, compressed end to end) pass both
// ways; the backend saw the caller's path, the query with the deployment rewritten and no
// credential, and its own key only, whichever way the caller presented its key.
func TestRealtimeRelay(t *testing.T) {
	for _, tc := range []struct {
		name, path, wantQuery string
		hdr                   []string
	}{
		{"v1, api-key header", "/openai/v1/realtime?model=chat", "model=d1", []string{"Api-Key", callerKey}},
		{"preview, bearer key", "/openai/realtime?api-version=2025-04-01-preview&deployment=chat", "api-version=2025-04-01-preview&deployment=d1", []string{"Authorization", "Bearer " + callerKey}},
		{"v1, key in the query (a browser)", "/openai/v1/realtime?api-key=" + callerKey + "&model=chat", "model=d1", nil},
		{"v1, key as a subprotocol (a browser)", "/openai/v1/realtime?model=chat", "model=d1", []string{"Sec-WebSocket-Protocol", "realtime, " + insecureKeyProtocol + callerKey}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ended := make(chan error, 1)
			b := newBackend(t, wsEcho(ended))
			g := newRealtimeGateway(t, nil, b)
			c, resp, err := g.dial(t, tc.path, tc.hdr...)
			if err != nil {
				t.Fatalf("dial: %v (%v)", err, resp)
			}
			if resp.Header.Get("X-Served-By") != "a1/d1" || resp.Header.Get("X-Gateway-Attempts") != "1" {
				t.Fatalf("101 headers: %v", resp.Header)
			}
			if !strings.Contains(resp.Header.Get("Sec-Websocket-Extensions"), "permessage-deflate") {
				t.Fatalf("compression was not negotiated end to end: %v", resp.Header)
			}
			exchange(t, c, websocket.MessageText, []byte(`{"type":"session.update"}`))
			exchange(t, c, websocket.MessageBinary, []byte{0, 1, 2, 0xff, 0xfe})
			big := make([]byte, 200<<10) // a 64-bit length, several relay buffers
			for i := range big {
				big[i] = byte(rand.IntN(256))
			}
			exchange(t, c, websocket.MessageBinary, big)
			exchange(t, c, websocket.MessageText, []byte(`{"type":"response.create"}`))
			if err := c.Close(websocket.StatusNormalClosure, "done"); err != nil {
				t.Fatalf("close: %v", err)
			}
			if err := waitEnded(t, ended, 2*time.Second); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
				t.Fatalf("the backend's side ended with %v, want the caller's close frame", err)
			}

			seen := b.requests()
			if len(seen) != 1 {
				t.Fatalf("backend saw %d requests", len(seen))
			}
			r := seen[0]
			if r.path != strings.Split(tc.path, "?")[0] || r.query != tc.wantQuery {
				t.Fatalf("backend saw %s?%s, want the caller's path with %s", r.path, r.query, tc.wantQuery)
			}
			if r.header.Get("Api-Key") != "backend-key-a1" || r.header.Get("Authorization") != "" {
				t.Fatalf("backend credentials: api-key %q, authorization %q", r.header.Get("Api-Key"), r.header.Get("Authorization"))
			}
			for k, vv := range r.header {
				for _, v := range vv {
					if strings.Contains(v, callerKey) {
						t.Fatalf("the caller's key reached the backend in %s", k)
					}
				}
			}
			line := g.logLine(t)
			if line["status"] != float64(101) || line["servedBy"] != "a1/d1" || line["app"] != "app1" ||
				line["deployment"] != "chat" || line["durationMs"] == nil || line["broken"] != nil {
				t.Fatalf("log line: %v", line)
			}
			if strings.Contains(g.log.String(), callerKey) {
				t.Fatal("the caller's key is in the log")
			}
		})
	}
}

// TestRealtimeFailover: a handshake the first target refuses (429, 503, a 200 that is no
// switch, no connection) fails over to the second; a 429 marks the first throttled, and the
// next session skips it without calling it. A 400 is the caller's: returned, no failover.
func TestRealtimeFailover(t *testing.T) {
	for _, tc := range []struct {
		name      string
		first     http.HandlerFunc
		down      bool
		throttled bool
	}{
		{name: "429", first: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "30")
			jsonAnswer(429, `{"error":{"code":"429","message":"Rate limit"}}`)(w, r)
		}, throttled: true},
		{name: "503", first: jsonAnswer(503, `{"error":{"code":"ServiceUnavailable"}}`)},
		{name: "200 instead of a switch", first: jsonAnswer(200, `{}`)},
		{name: "connection refused", down: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b1 := newBackend(t, tc.first)
			b2 := newBackend(t, wsEcho(nil))
			if tc.down {
				b1.srv.Close()
			}
			g := newRealtimeGateway(t, nil, b1, b2)
			c, resp, err := g.dial(t, "/openai/v1/realtime?model=chat", "Api-Key", callerKey)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			if resp.Header.Get("X-Served-By") != "a2/d2" || resp.Header.Get("X-Gateway-Attempts") != "2" {
				t.Fatalf("101 headers: %v", resp.Header)
			}
			exchange(t, c, websocket.MessageText, []byte("hi"))
			c.Close(websocket.StatusNormalClosure, "")
			line := g.logLine(t)
			if line["status"] != float64(101) || len(line["tried"].([]any)) != 2 {
				t.Fatalf("log line: %v", line)
			}
			if !tc.throttled {
				return
			}
			if _, throttled, skip := g.view.Unavailable("a1/d1", time.Now()); !skip || !throttled {
				t.Fatal("a 429 on the handshake did not mark the target throttled")
			}
			c2, resp, err := g.dial(t, "/openai/v1/realtime?model=chat", "Api-Key", callerKey)
			if err != nil || resp.Header.Get("X-Gateway-Attempts") != "1" || resp.Header.Get("X-Served-By") != "a2/d2" {
				t.Fatalf("second session: %v %v", err, resp.Header)
			}
			c2.Close(websocket.StatusNormalClosure, "")
			if n := len(b1.requests()); n != 1 {
				t.Fatalf("the throttled target was called %d times, want once (the 429)", n)
			}
			if line := g.logLine(t); !strings.Contains(g.log.String(), `"why":"throttled"`) {
				t.Fatalf("the skip is not logged: %v", line)
			}
		})
	}

	t.Run("400 is the caller's", func(t *testing.T) {
		b1 := newBackend(t, jsonAnswer(400, `{"error":{"code":"BadRequest","message":"bad api-version"}}`))
		b2 := newBackend(t, wsEcho(nil))
		g := newRealtimeGateway(t, nil, b1, b2)
		_, resp, err := g.dial(t, "/openai/realtime?api-version=1999-01-01&deployment=chat", "Api-Key", callerKey)
		if err == nil || resp == nil || resp.StatusCode != 400 {
			t.Fatalf("dial: %v %v", err, resp)
		}
		if resp.Header.Get("X-Served-By") != "a1/d1" || len(b2.requests()) != 0 {
			t.Fatalf("served by %q, second target called %d times", resp.Header.Get("X-Served-By"), len(b2.requests()))
		}
	})
}

// TestRealtimeEnds: whichever side ends the session, the other side's connection ends within a
// bound, with a close frame: the one the closing side sent, or the gateway's own.
func TestRealtimeEnds(t *testing.T) {
	const bound = 2 * time.Second
	setup := func(t *testing.T, tune func(*config.Routing)) (*rtGateway, *websocket.Conn, chan error) {
		ended := make(chan error, 1)
		g := newRealtimeGateway(t, tune, newBackend(t, wsEcho(ended)))
		c, _, err := g.dial(t, "/openai/v1/realtime?model=chat", "Api-Key", callerKey)
		if err != nil {
			t.Fatal(err)
		}
		exchange(t, c, websocket.MessageText, []byte("hi"))
		return g, c, ended
	}
	t.Run("the caller drops its connection", func(t *testing.T) {
		g, c, ended := setup(t, nil)
		start := time.Now()
		c.CloseNow()
		err := waitEnded(t, ended, bound)
		if websocket.CloseStatus(err) != websocket.StatusGoingAway {
			t.Fatalf("backend: %v, want the gateway's 1001", err)
		}
		t.Logf("the backend's connection ended %v after the caller's", time.Since(start))
		if line := g.logLine(t); line["status"] != float64(101) {
			t.Fatalf("log line: %v", line)
		}
	})
	t.Run("the backend closes", func(t *testing.T) {
		_, c, _ := setup(t, nil)
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		defer cancel()
		c.Write(ctx, websocket.MessageText, []byte("close-please"))
		if code, reason := closeStatus(t, c, bound); code != websocket.StatusNormalClosure || reason != "bye" {
			t.Fatalf("caller got %d %q, want the backend's 1000 bye", code, reason)
		}
	})
	t.Run("the backend drops its connection", func(t *testing.T) {
		g, c, _ := setup(t, nil)
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		defer cancel()
		c.Write(ctx, websocket.MessageText, []byte("drop-please"))
		if code, _ := closeStatus(t, c, bound); code != closeBadGateway {
			t.Fatalf("caller got %d, want the gateway's 1014", code)
		}
		line := g.logLine(t)
		if b, _ := line["broken"].(string); !strings.Contains(b, "backend") {
			t.Fatalf("log line: %v", line)
		}
	})
	t.Run("idle", func(t *testing.T) {
		g, c, ended := setup(t, func(r *config.Routing) { r.Timeouts.RealtimeIdle = config.Duration(300 * time.Millisecond) })
		start := time.Now()
		code, reason := closeStatus(t, c, bound)
		if code != websocket.StatusGoingAway || !strings.Contains(reason, "idle") {
			t.Fatalf("caller got %d %q", code, reason)
		}
		if d := time.Since(start); d < 250*time.Millisecond {
			t.Fatalf("closed after %v, before the idle limit", d)
		}
		if err := waitEnded(t, ended, bound); websocket.CloseStatus(err) != websocket.StatusGoingAway {
			t.Fatalf("backend: %v", err)
		}
		if line := g.logLine(t); !strings.Contains(line["broken"].(string), "idle") {
			t.Fatalf("log line: %v", line)
		}
	})
	t.Run("the session's limit", func(t *testing.T) {
		_, c, _ := setup(t, func(r *config.Routing) { r.Timeouts.RealtimeSession = config.Duration(700 * time.Millisecond) })
		stop := make(chan struct{})
		defer close(stop)
		go func() { // never idle
			for {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
					c.Write(context.Background(), websocket.MessageText, []byte("tick"))
				}
			}
		}()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), bound)
			_, msg, err := c.Read(ctx)
			cancel()
			if err != nil {
				if websocket.CloseStatus(err) != websocket.StatusGoingAway {
					t.Fatalf("caller: %v", err)
				}
				break
			}
			if string(msg) != "backend:tick" {
				t.Fatalf("got %q", msg)
			}
		}
	})
	t.Run("shutdown", func(t *testing.T) {
		g, c, ended := setup(t, nil)
		shut := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			shut <- g.srv.Shutdown(ctx)
		}()
		if code, reason := closeStatus(t, c, bound); code != websocket.StatusGoingAway || !strings.Contains(reason, "shutting down") {
			t.Fatalf("caller got %d %q", code, reason)
		}
		if err := waitEnded(t, ended, bound); websocket.CloseStatus(err) != websocket.StatusGoingAway {
			t.Fatalf("backend: %v", err)
		}
		select {
		case err := <-shut:
			if err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
		case <-time.After(bound):
			t.Fatal("Shutdown did not return")
		}
	})
}

// TestRealtimeRefused: requests the gateway answers itself, in Azure's error shape.
func TestRealtimeRefused(t *testing.T) {
	b := newBackend(t, wsEcho(nil))
	g := newRealtimeGateway(t, nil, b)
	upgrade := []string{"Connection", "Upgrade", "Upgrade", "websocket", "Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="}
	for _, tc := range []struct {
		name, method, path string
		hdr                []string
		status             int
		code               string
	}{
		{"no key", "GET", "/openai/v1/realtime?model=chat", upgrade, 401, "401"},
		{"a wrong key in the query", "GET", "/openai/v1/realtime?model=chat&api-key=nope", upgrade, 401, "401"},
		{"not an upgrade", "GET", "/openai/v1/realtime?model=chat", []string{"Api-Key", callerKey}, 426, "UpgradeRequired"},
		{"POST", "POST", "/openai/v1/realtime?model=chat", append([]string{"Api-Key", callerKey}, upgrade...), 405, "MethodNotAllowed"},
		{"no deployment", "GET", "/openai/realtime?api-version=2025-04-01-preview", append([]string{"Api-Key", callerKey}, upgrade...), 400, "InvalidRequest"},
		{"two deployments", "GET", "/openai/v1/realtime?model=chat&model=chat", append([]string{"Api-Key", callerKey}, upgrade...), 400, "InvalidRequest"},
		{"unknown deployment", "GET", "/openai/v1/realtime?model=nope", append([]string{"Api-Key", callerKey}, upgrade...), 404, "DeploymentNotFound"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, "http://"+g.addr+tc.path, nil)
			for i := 0; i+1 < len(tc.hdr); i += 2 {
				req.Header.Set(tc.hdr[i], tc.hdr[i+1])
			}
			resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != tc.status || body.Error.Code != tc.code || body.Error.Message == "" {
				t.Fatalf("got %d %+v (%v), want %d %s", resp.StatusCode, body, err, tc.status, tc.code)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Fatalf("Content-Type %q", ct)
			}
		})
	}
	if n := len(b.requests()); n != 0 {
		t.Fatalf("the backend was called %d times", n)
	}
}

func TestTakeRealtimeCredentials(t *testing.T) {
	for _, tc := range []struct {
		name, query, protocols, header string
		wantQuery, wantProtocols, want string
	}{
		{"query key", "api-key=k1&model=chat&api-version=x", "", "", "model=chat&api-version=x", "", "k1"},
		{"escaped name and value, any case", "model=chat&API%2DKEY=a%2Bb&Authorization=Bearer+x", "", "", "model=chat", "", "a+b"},
		{"subprotocol key", "model=chat", "realtime, openai-insecure-api-key.k2, openai-beta.realtime-v1", "", "model=chat", "realtime, openai-beta.realtime-v1", "k2"},
		{"header wins, query still removed", "api-key=k1&model=chat", "openai-insecure-api-key.k2", "h", "model=chat", "", "h"},
		{"nothing", "model=chat", "realtime", "", "model=chat", "realtime", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &http.Request{URL: &url.URL{Path: realtimeV1Path, RawQuery: tc.query}, Header: http.Header{}}
			if tc.protocols != "" {
				r.Header.Set("Sec-WebSocket-Protocol", tc.protocols)
			}
			if tc.header != "" {
				r.Header.Set("Api-Key", tc.header)
			}
			TakeRealtimeCredentials(r)
			if r.URL.RawQuery != tc.wantQuery || r.Header.Get("Sec-WebSocket-Protocol") != tc.wantProtocols || r.Header.Get("Api-Key") != tc.want {
				t.Fatalf("query %q, protocols %q, api-key %q", r.URL.RawQuery, r.Header.Get("Sec-WebSocket-Protocol"), r.Header.Get("Api-Key"))
			}
		})
	}
	if q := withQueryValue("api-version=2025-04-01-preview&deployment=chat&x=%41", "deployment", "gpt 4o/rt"); q != "api-version=2025-04-01-preview&deployment=gpt+4o%2Frt&x=%41" {
		t.Fatalf("withQueryValue: %q", q)
	}
}

// TestFrameTracker: frames of every header form (7, 16 and 64-bit lengths, masked or not),
// cut at random points, are followed to their boundaries, and a close frame is noticed.
func TestFrameTracker(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		var stream []byte
		var boundaries []int
		n := 1 + rng.IntN(20)
		closeAt := -1
		if round%3 == 0 {
			closeAt = n - 1
		}
		for i := range n {
			size := []int{0, 1, 125, 126, 200, 65535, 65536, 70000}[rng.IntN(8)]
			op := byte(0x1 + rng.IntN(2))
			if i == closeAt {
				op, size = 0x8, 2+rng.IntN(100)
			}
			stream = append(stream, frame(op, size, rng.IntN(2) == 0)...)
			boundaries = append(boundaries, len(stream))
		}
		var f frameTracker
		pos, next := 0, 0
		for pos < len(stream) {
			step := min(1+rng.IntN(3000), len(stream)-pos)
			if rng.IntN(4) == 0 {
				step = min(1+rng.IntN(4), len(stream)-pos) // split headers too
			}
			f.feed(stream[pos : pos+step])
			pos += step
			for next < len(boundaries) && boundaries[next] < pos {
				next++
			}
			want := next < len(boundaries) && boundaries[next] == pos
			if f.atBoundary() != want {
				t.Fatalf("round %d at %d: atBoundary %v, want %v", round, pos, f.atBoundary(), want)
			}
		}
		if f.closed != (closeAt >= 0) {
			t.Fatalf("round %d: closed %v", round, f.closed)
		}
	}
	// The gateway's own close frames are frames: one read back ends on a boundary.
	for _, masked := range []bool{false, true} {
		var f frameTracker
		cf := closeFrame(closeGoingAway, strings.Repeat("x", 200), masked)
		f.feed(cf)
		if !f.atBoundary() || !f.closed || len(cf) != 2+125+map[bool]int{false: 0, true: 4}[masked] {
			t.Fatalf("close frame (masked %v): %x", masked, cf)
		}
	}
}

// frame builds a WebSocket frame with size payload bytes.
func frame(op byte, size int, masked bool) []byte {
	b := []byte{0x80 | op, 0}
	switch {
	case size < 126:
		b[1] = byte(size)
	case size < 1<<16:
		b[1] = 126
		b = binary.BigEndian.AppendUint16(b, uint16(size))
	default:
		b[1] = 127
		b = binary.BigEndian.AppendUint64(b, uint64(size))
	}
	if masked {
		b[1] |= 0x80
		b = append(b, 1, 2, 3, 4)
	}
	return append(b, make([]byte, size)...)
}
