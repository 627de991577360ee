package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/aoai-failover/gateway/tests/fakeazure"
)

// rtBackend is a small Azure OpenAI Realtime endpoint: it checks its own key, switches to
// WebSocket (or refuses every handshake with refuse), sends session.created, answers
// session.update with session.updated and response.create with response.done, echoes anything
// else, and keeps each handshake's query and headers.
type rtBackend struct {
	name   string
	key    string
	srv    *httptest.Server
	refuse atomic.Int32
	mu     sync.Mutex
	seen   []*http.Request
	ended  chan error
}

func startRealtimeBackend(t *testing.T, name string) *rtBackend {
	b := &rtBackend{name: name, key: "rt-key-" + name + "-8c41f2", ended: make(chan error, 16)}
	b.srv = httptest.NewServer(http.HandlerFunc(b.serve))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *rtBackend) handshakes() []*http.Request {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*http.Request(nil), b.seen...)
}

func (b *rtBackend) serve(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	b.seen = append(b.seen, &http.Request{URL: r.URL, Header: r.Header.Clone()})
	b.mu.Unlock()
	fail := func(status int, code string) {
		w.Header().Set("Content-Type", "application/json")
		if status == 429 {
			w.Header().Set("Retry-After", "30")
		}
		w.WriteHeader(status)
		io.WriteString(w, `{"error":{"code":"`+code+`","message":"refused by the test backend"}}`)
	}
	if r.Header.Get("Api-Key") != b.key {
		fail(401, "401")
		return
	}
	if s := b.refuse.Load(); s != 0 {
		fail(int(s), "Refused")
		return
	}
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	ctx := context.Background()
	send := func(v any) error {
		data, _ := json.Marshal(v)
		return c.Write(ctx, websocket.MessageText, data)
	}
	deployment := r.URL.Query().Get("model") + r.URL.Query().Get("deployment")
	if send(map[string]any{"type": "session.created", "session": map[string]any{"model": deployment}}) != nil {
		return
	}
	for {
		typ, data, err := c.Read(ctx)
		if err != nil {
			b.ended <- err
			return
		}
		var ev struct {
			Type string `json:"type"`
		}
		switch _ = json.Unmarshal(data, &ev); {
		case typ == websocket.MessageText && ev.Type == "session.update":
			err = send(map[string]any{"type": "session.updated"})
		case typ == websocket.MessageText && ev.Type == "response.create":
			err = send(map[string]any{"type": "response.done", "response": map[string]any{"id": "resp_1", "status": "completed",
				"output": []any{map[string]any{"type": "message", "content": []any{map[string]any{"type": "output_text", "text": "hello from " + b.name}}}}}})
		default:
			err = c.Write(ctx, typ, append([]byte("echo:"), data...))
		}
		if err != nil {
			return
		}
	}
}

// tlsFront terminates TLS in front of the gateway and passes bytes on, as Front Door does for
// a WebSocket; the SDK's Realtime client speaks only wss:.
func tlsFront(t *testing.T, ca *fakeazure.CA, target string) string {
	certFile, keyFile := ca.Issue(t, "front")
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer in.Close()
				out, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer out.Close()
				done := make(chan struct{}, 2)
				go func() { io.Copy(out, in); done <- struct{}{} }()
				go func() { io.Copy(in, out); done <- struct{}{} }()
				<-done
			}()
		}
	}()
	return "https://" + ln.Addr().String()
}

func rtDial(t *testing.T, rawURL string, hdr http.Header) (*websocket.Conn, *http.Response) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, rawURL, &websocket.DialOptions{HTTPHeader: hdr, HTTPClient: &http.Client{Transport: &http.Transport{}}})
	if err != nil {
		t.Fatalf("dial %s: %v (%v)", rawURL, err, resp)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c, resp
}

func rtRead(t *testing.T, c *websocket.Conn) (websocket.MessageType, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	typ, data, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return typ, string(data)
}

// TestRealtimeThroughGateway runs the built binary with client keys in (fake) Key Vault in
// front of two Realtime backends, the first refusing every handshake with 429: sessions fail
// over, then skip the throttled target; frames pass both ways; each backend sees its own key and
// its own deployment name, never the caller's key (header or query); unauthenticated upgrades
// get 401; the official Node SDK's Realtime client works through a TLS front; SIGTERM ends an
// open session with a close frame and the process exits 0.
func TestRealtimeThroughGateway(t *testing.T) {
	ca := fakeazure.NewCA(t)
	kv, id := fakeazure.NewKeyVault(t, ca), fakeazure.NewIdentity(t)
	const appKey = "voice-app-key-51d0c7e2"
	kv.SetSecret("gateway-client-keys", `{"voice-app":"`+appKey+`"}`)
	swc, frc := startRealtimeBackend(t, "swc"), startRealtimeBackend(t, "frc")
	swc.refuse.Store(429)
	doc := map[string]any{
		"keyVault": kv.URL,
		"accounts": map[string]any{
			"swc": map[string]any{"endpoint": swc.srv.URL, "auth": map[string]any{"keyEnv": "KEY_SWC"}},
			"frc": map[string]any{"endpoint": frc.srv.URL, "auth": map[string]any{"keyEnv": "KEY_FRC"}},
		},
		"deployments": map[string]any{"voice": []any{
			map[string]any{"account": "swc", "deployment": "rt-swc", "priority": 1},
			map[string]any{"account": "frc", "deployment": "rt-frc", "priority": 2},
		}},
		"clients": map[string]any{"keyVaultSecret": "gateway-client-keys"},
	}
	b, _ := json.Marshal(doc)
	env := map[string]string{"GATEWAY_CONFIG": string(b), "KEY_SWC": swc.key, "KEY_FRC": frc.key, "SSL_CERT_FILE": ca.File}
	for k, v := range id.Env() {
		env[k] = v
	}
	gw := startGateway(t, env, swc.key, frc.key, appKey, id.Header)
	t.Cleanup(func() { checkOutput(t, gw, id.Issued()) })
	waitFor(t, "the client keys", 5*time.Second, func() bool {
		resp, err := http.Get(gw.URL + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	ws := "ws" + strings.TrimPrefix(gw.URL, "http")

	t.Run("unauthenticated upgrades get 401", func(t *testing.T) {
		for _, q := range []string{"model=voice", "model=voice&api-key=wrong"} {
			req, _ := http.NewRequest("GET", gw.URL+"/openai/v1/realtime?"+q, nil)
			for k, v := range map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="} {
				req.Header.Set(k, v)
			}
			resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var body struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			err = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 401 || body.Error.Code != "401" || resp.Header.Get("WWW-Authenticate") == "" {
				t.Fatalf("%s: %d %+v %v", q, resp.StatusCode, body, err)
			}
		}
	})

	t.Run("failover, frames both ways, credentials replaced", func(t *testing.T) {
		c, resp := rtDial(t, ws+"/openai/v1/realtime?model=voice", http.Header{"Api-Key": {appKey}})
		if resp.Header.Get("X-Served-By") != "frc/rt-frc" || resp.Header.Get("X-Gateway-Attempts") != "2" {
			t.Fatalf("101: %v", resp.Header)
		}
		if _, msg := rtRead(t, c); !strings.Contains(msg, `"session.created"`) || !strings.Contains(msg, `"rt-frc"`) {
			t.Fatalf("first event %s", msg)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, m := range []struct {
			typ  websocket.MessageType
			data string
		}{{websocket.MessageText, `{"type":"input_audio_buffer.append","audio":"AAAA"}`}, {websocket.MessageBinary, "\x00\x01\xff"}} {
			if err := c.Write(ctx, m.typ, []byte(m.data)); err != nil {
				t.Fatal(err)
			}
			if typ, got := rtRead(t, c); typ != m.typ || got != "echo:"+m.data {
				t.Fatalf("got %v %q", typ, got)
			}
		}
		c.Close(websocket.StatusNormalClosure, "bye")
		select {
		case err := <-frc.ended:
			if websocket.CloseStatus(err) != websocket.StatusNormalClosure {
				t.Fatalf("backend's side ended with %v", err)
			}
		case <-time.After(3 * time.Second):
			t.Fatal("the backend's connection did not end")
		}
	})

	t.Run("the throttled target is skipped; the key in the query", func(t *testing.T) {
		q := url.Values{"api-version": {"2025-04-01-preview"}, "deployment": {"voice"}, "api-key": {appKey}}
		c, resp := rtDial(t, ws+"/openai/realtime?"+q.Encode(), nil)
		if resp.Header.Get("X-Served-By") != "frc/rt-frc" || resp.Header.Get("X-Gateway-Attempts") != "1" {
			t.Fatalf("101: %v", resp.Header)
		}
		rtRead(t, c)
		c.Close(websocket.StatusNormalClosure, "")
		if n := len(swc.handshakes()); n != 1 {
			t.Fatalf("the throttled target had %d handshakes, want 1 (the 429)", n)
		}
	})

	t.Run("the Node SDK's Realtime client", func(t *testing.T) {
		dir := filepath.Join(repoRoot(), "tests", "node")
		node, err := exec.LookPath("node")
		if _, statErr := os.Stat(filepath.Join(dir, "node_modules", "ws")); err != nil || statErr != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("node or the ws package is missing (tests/run installs them): %v %v", err, statErr)
			}
			t.Skip("needs node and `npm ci` in tests/node (tests/run does both)")
		}
		front := tlsFront(t, ca, strings.TrimPrefix(gw.URL, "http://"))
		cmd := exec.Command(node, "realtime.mjs")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GATEWAY_URL="+front, "GATEWAY_API_KEY="+appKey, "DEPLOYMENT=voice", "NODE_EXTRA_CA_CERTS="+ca.File)
		out, err := cmd.Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				t.Fatalf("node realtime client: %v\n%s\n%s", err, out, ee.Stderr)
			}
			t.Fatal(err)
		}
		var got struct {
			ServedBy, Attempts, Text string
			Events                   []string
			CloseCode                int
		}
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("output %q: %v", out, err)
		}
		if got.ServedBy != "frc/rt-frc" || got.Text != "hello from frc" || got.CloseCode != 1000 ||
			strings.Join(got.Events, ",") != "session.created,session.updated,response.done" {
			t.Fatalf("node client saw %+v", got)
		}
	})

	for _, r := range append(swc.handshakes(), frc.handshakes()...) {
		if strings.Contains(r.URL.RawQuery, appKey) || strings.Contains(r.URL.RawQuery, "api-key") {
			t.Errorf("a backend saw a caller's credential in its query: %s", r.URL.RawQuery)
		}
		for k, vv := range r.Header {
			for _, v := range vv {
				if strings.Contains(v, appKey) {
					t.Errorf("a backend saw the caller's key in %s", k)
				}
			}
		}
		name := r.URL.Query().Get("model") + r.URL.Query().Get("deployment")
		if name != "rt-swc" && name != "rt-frc" || r.Header.Get("Api-Key") == "" {
			t.Errorf("a backend saw deployment %q and api-key set %v", name, r.Header.Get("Api-Key") != "")
		}
	}
	if frcSeen := frc.handshakes(); len(frcSeen) < 2 || frcSeen[1].URL.Query().Get("api-version") != "2025-04-01-preview" {
		t.Errorf("the query was not passed on: %v", frcSeen)
	}

	t.Run("one log line per session", func(t *testing.T) {
		waitFor(t, "the session's log lines", 3*time.Second, func() bool {
			return strings.Count(gw.stdout.String(), `"status":101`) >= 2
		})
		for _, line := range strings.Split(gw.stdout.String(), "\n") {
			if !strings.Contains(line, `"status":101`) {
				continue
			}
			var l map[string]any
			json.Unmarshal([]byte(line), &l)
			if l["servedBy"] != "frc/rt-frc" || l["app"] != "voice-app" || l["deployment"] != "voice" || l["durationMs"] == nil {
				t.Fatalf("log line %s", line)
			}
			t.Logf("log line: %s", line)
		}
	})

	t.Run("under the Functions host stand-in", func(t *testing.T) {
		// The packaged app under tests/funchost, which relays upgrades as the host's YARP
		// forwarder does (DefaultHttpProxyService, HttpForwarder.HandleUpgradedResponse).
		h := startHosted(t, packagedApp(t), env, swc.key, frc.key, appKey, id.Header)
		h.waitReady(t)
		c, resp := rtDial(t, "ws"+strings.TrimPrefix(h.URL, "http")+"/openai/v1/realtime?model=voice", http.Header{"Api-Key": {appKey}})
		if resp.Header.Get("X-Served-By") != "frc/rt-frc" {
			t.Fatalf("101 through the host: %v", resp.Header)
		}
		rtRead(t, c)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"ping"}`)); err != nil {
			t.Fatal(err)
		}
		if _, got := rtRead(t, c); got != `echo:{"type":"ping"}` {
			t.Fatalf("got %q through the host", got)
		}
		c.Close(websocket.StatusNormalClosure, "")
	})

	t.Run("SIGTERM closes open sessions", func(t *testing.T) {
		c, _ := rtDial(t, ws+"/openai/v1/realtime?model=voice", http.Header{"Api-Key": {appKey}})
		rtRead(t, c)
		if err := gw.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _, err := c.Read(ctx)
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.StatusGoingAway || !strings.Contains(ce.Reason, "shutting down") {
			t.Fatalf("the session ended with %v, want the gateway's 1001", err)
		}
		select {
		case <-gw.done:
		case <-time.After(10 * time.Second):
			t.Fatal("the gateway did not exit after SIGTERM with a session open")
		}
	})
}
