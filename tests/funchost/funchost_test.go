package funchost

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aoai-failover/gateway/tests/testio"
)

// The test binary doubles as the custom handler: with FUNCHOST_FAKE_HANDLER set it serves on
// FUNCTIONS_CUSTOMHANDLER_PORT instead of running tests.
func TestMain(m *testing.M) {
	if mode := os.Getenv("FUNCHOST_FAKE_HANDLER"); mode != "" {
		fakeHandler(mode)
		return
	}
	os.Exit(m.Run())
}

// seen is what the fake handler reports about a request.
type seen struct {
	Method, Path, Query, Host string
	Header                    http.Header
	Body                      string
	ReceivedAt                int64
	Env                       map[string]string
	Dir                       string
	Args                      []string
}

func fakeHandler(mode string) {
	go func() { time.Sleep(2 * time.Minute); os.Exit(9) }() // never outlive a broken test
	if code, ok := strings.CutPrefix(mode, "exit:"); ok {
		fmt.Fprintln(os.Stderr, "fatal: this handler cannot start")
		n, _ := strconv.Atoi(code)
		os.Exit(n)
	}
	if d, ok := strings.CutPrefix(mode, "slowonce:"); ok {
		marker := filepath.Join(os.Getenv("FUNCTIONS_APP_ROOT_PATH"), ".started")
		if _, err := os.Stat(marker); err != nil {
			os.WriteFile(marker, nil, 0o644)
			dur, _ := time.ParseDuration(d)
			time.Sleep(dur)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+os.Getenv("FUNCTIONS_CUSTOMHANDLER_PORT"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" {
			fmt.Println("ping")
			return
		}
		body, _ := io.ReadAll(r.Body)
		s := seen{Method: r.Method, Path: strings.SplitN(r.RequestURI, "?", 2)[0], Query: r.URL.RawQuery, Host: r.Host,
			Header: r.Header, Body: string(body), ReceivedAt: time.Now().UnixNano(), Env: map[string]string{}, Args: os.Args[1:]}
		s.Dir, _ = os.Getwd()
		for _, kv := range os.Environ() {
			if k, v, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "FUNCTIONS_") {
				s.Env[k] = v
			}
		}
		w.Header().Set("X-From-Handler", "yes")
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(s)
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		gap, _ := time.ParseDuration(r.URL.Query().Get("gap"))
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; i < n; i++ {
			if i > 0 {
				time.Sleep(gap)
			}
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("/sleep", func(w http.ResponseWriter, r *http.Request) {
		d, _ := time.ParseDuration(r.URL.Query().Get("d"))
		select {
		case <-time.After(d):
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/exit", func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(r.URL.Query().Get("code"))
		w.WriteHeader(http.StatusAccepted)
		w.(http.Flusher).Flush()
		go func() { time.Sleep(50 * time.Millisecond); os.Exit(code) }()
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Seen-Upgrade: %s\r\n\r\n", r.Header.Get("Upgrade"))
		brw.Flush()
		io.Copy(conn, brw) // echo
	})
	http.Serve(ln, mux)
}

// newApp writes a function app whose handler is this test binary.
func newApp(t *testing.T, hostExtra string) string {
	t.Helper()
	dir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	host := `{"version": "2.0", ` + hostExtra + `
  "customHandler": {"description": {"defaultExecutablePath": ` + strconv.Quote(exe) + `, "workingDirectory": "work",
    "arguments": ["fake-arg", "%FAKE_ARG%"]}, "enableProxyingHttpRequest": true},
  "extensions": {"http": {"routePrefix": "", "customHeaders": {"X-Host-Custom": "1"}}}}`
	must(t, os.WriteFile(filepath.Join(dir, "host.json"), []byte(host), 0o644))
	must(t, os.MkdirAll(filepath.Join(dir, "function"), 0o755))
	must(t, os.MkdirAll(filepath.Join(dir, "work"), 0o755))
	fn := `{"bindings": [{"type": "httpTrigger", "direction": "in", "name": "req", "authLevel": "anonymous", "route": "{*path}"},
  {"type": "http", "direction": "out", "name": "res"}]}`
	must(t, os.WriteFile(filepath.Join(dir, "function", "function.json"), []byte(fn), 0o644))
	return dir
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func startHost(t *testing.T, dir, mode string, opts Options) (*Host, *testio.Buffer) {
	t.Helper()
	log := &testio.Buffer{}
	opts.AppDir = dir
	opts.Log = log
	opts.Env = append(opts.Env, "PATH="+os.Getenv("PATH"), "FUNCHOST_FAKE_HANDLER="+mode, "FAKE_ARG=expanded arg")
	h, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.Close()
		if t.Failed() {
			t.Logf("host log:\n%s", log.String())
		}
	})
	return h, log
}

func waitReady(t *testing.T, h *Host) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
}

func waitStarts(t *testing.T, h *Host, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for h.Starts() < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

func get(t *testing.T, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		if strings.EqualFold(hdr[i], "Host") {
			req.Host = hdr[i+1]
		} else {
			req.Header.Add(hdr[i], hdr[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestFunctionsHostProxiesAsTheHostDoes(t *testing.T) {
	dir := newApp(t, "")
	h, _ := startHost(t, dir, "serve", Options{})
	waitReady(t, h)

	resp, body := get(t, h.URL+"/echo/a%20b/%2Fx/./c/../d%7e?q=1&q=2&x=%2F&e=",
		"Host", "caller.example", "api-key", "caller-key", "X-Test", "v", "User-Agent", "caller-ua",
		"X-Forwarded-For", "203.0.113.9", "X-Forwarded-Proto", "https", "Forwarded", "for=203.0.113.9",
		"Upgrade-Insecure-Requests", "1", "Proxy-Authorization", "Basic eA==", "Te", "trailers",
		"X-Azure-Functions-InvocationId", "spoofed", "x-ms-invocation-id", "spoofed")
	if resp.StatusCode != 200 || resp.Header.Get("X-From-Handler") != "yes" || resp.Header.Get("X-Host-Custom") != "1" {
		t.Fatalf("answer %d %v: %s", resp.StatusCode, resp.Header, body)
	}
	var s seen
	must(t, json.Unmarshal([]byte(body), &s))
	port := s.Env["FUNCTIONS_CUSTOMHANDLER_PORT"]
	checks := []struct {
		what, got, want string
	}{
		// Kestrel decodes (but %2F), drops dot segments; YARP re-encodes, '%' included.
		{"path", s.Path, "/echo/a%20b/%252Fx/d~"},
		{"query", s.Query, "q=1&q=2&x=%2F&e="},
		{"Host", s.Host, "127.0.0.1:" + port},
		{"HTTPWORKER port", s.Env["FUNCTIONS_HTTPWORKER_PORT"], port},
		{"worker id", s.Env["FUNCTIONS_HTTPWORKER_ID"], s.Env["FUNCTIONS_CUSTOMHANDLER_WORKER_ID"]},
		{"app root", s.Env["FUNCTIONS_APP_ROOT_PATH"], dir},
		{"working directory", s.Dir, filepath.Join(dir, "work")},
		{"arguments", strings.Join(s.Args, "|"), "fake-arg|expanded|arg"}, // .NET re-splits the joined line
		{"api-key", s.Header.Get("Api-Key"), "caller-key"},
		{"X-Test", s.Header.Get("X-Test"), "v"},
		{"User-Agent", s.Header.Get("User-Agent"), "caller-ua"},
		{"X-Forwarded-For", s.Header.Get("X-Forwarded-For"), "127.0.0.1"},
		{"X-Forwarded-Proto", s.Header.Get("X-Forwarded-Proto"), "http"},
		{"X-Forwarded-Host", s.Header.Get("X-Forwarded-Host"), "caller.example"},
		{"Forwarded", s.Header.Get("Forwarded"), ""},
		{"Upgrade-Insecure-Requests", s.Header.Get("Upgrade-Insecure-Requests"), ""},
		{"Proxy-Authorization", s.Header.Get("Proxy-Authorization"), ""},
		{"Te", s.Header.Get("Te"), ""},
		{"HostVersion", s.Header.Get("X-Azure-Functions-HostVersion"), hostVersion},
		{"x-ms-invocation-id", s.Header.Get("X-Ms-Invocation-Id"), s.Header.Get("X-Azure-Functions-InvocationId")},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.what, c.got, c.want)
		}
	}
	if id := s.Header.Get("X-Azure-Functions-InvocationId"); len(id) != 36 || len(s.Header.Values("X-Azure-Functions-InvocationId")) != 1 {
		t.Errorf("invocation id %q", s.Header.Values("X-Azure-Functions-InvocationId"))
	}

	// A body with a declared length reaches the handler only once it is all there.
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPost, h.URL+"/echo", pr)
	req.ContentLength = 10
	var lastPart time.Time
	go func() {
		pw.Write([]byte("hello"))
		time.Sleep(300 * time.Millisecond)
		lastPart = time.Now()
		pw.Write([]byte("world"))
		pw.Close()
	}()
	resp2, err := http.DefaultClient.Do(req)
	must(t, err)
	b2, _ := io.ReadAll(resp2.Body)
	resp2.Body.Close()
	var s2 seen
	must(t, json.Unmarshal(b2, &s2))
	if s2.Body != "helloworld" || s2.Header.Get("Content-Length") != "10" || time.Unix(0, s2.ReceivedAt).Before(lastPart) {
		t.Errorf("body %q (Content-Length %q) seen at %v, last part sent at %v", s2.Body, s2.Header.Get("Content-Length"), time.Unix(0, s2.ReceivedAt), lastPart)
	}

	// The answer streams: each event arrives as the handler sends it.
	start := time.Now()
	resp3, err := http.Get(h.URL + "/stream?n=4&gap=200ms")
	must(t, err)
	defer resp3.Body.Close()
	sc := bufio.NewScanner(resp3.Body)
	var at []time.Duration
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data: ") {
			at = append(at, time.Since(start))
		}
	}
	if len(at) != 4 || at[3]-at[0] < 400*time.Millisecond {
		t.Errorf("events arrived at %v, want 4 about 200 ms apart", at)
	}

	// "/" reaches the handler (the catch-all route takes it; no host homepage).
	if resp, body := get(t, h.URL+"/"); resp.StatusCode != 200 || strings.Contains(body, "Functions") {
		t.Errorf("GET / %d %q", resp.StatusCode, body)
	}
	if h.Starts() != 1 {
		t.Errorf("%d starts", h.Starts())
	}
}

func TestFunctionsHostRestartsTheHandler(t *testing.T) {
	dir := newApp(t, "")
	h, log := startHost(t, dir, "serve", Options{})
	waitReady(t, h)

	// Killed (exit 137): a worker error; the host starts it again.
	pid := h.HandlerPID()
	must(t, syscall.Kill(pid, syscall.SIGKILL))
	if resp, _ := get(t, h.URL+"/echo"); resp.StatusCode != 200 || h.Starts() != 2 || h.HandlerPID() == pid {
		t.Fatalf("after SIGKILL: %d, %d starts", resp.StatusCode, h.Starts())
	}
	// Exit 200 asks for a restart, not counted as an error.
	get(t, h.URL+"/exit?code=200")
	waitStarts(t, h, 3)
	waitReady(t, h)
	if resp, _ := get(t, h.URL+"/echo"); resp.StatusCode != 200 || h.Starts() != 3 {
		t.Fatalf("after exit 200: %d, %d starts", resp.StatusCode, h.Starts())
	}
	if n := len(h.errorTimes); n != 1 {
		t.Errorf("%d errors counted, want 1", n)
	}
	// Exit 0 is left alone: nothing restarts it, and requests fail (500) once the proxy's ten
	// attempts (about 1.85 s) are spent.
	get(t, h.URL+"/exit?code=0")
	deadline := time.Now().Add(5 * time.Second)
	for h.HandlerPID() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	resp, _ := get(t, h.URL+"/echo")
	if took := time.Since(start); resp.StatusCode != 500 || took < 1500*time.Millisecond || h.Starts() != 3 || h.State() != "Initialized" {
		t.Errorf("after exit 0: %d in %v, %d starts, state %s", resp.StatusCode, took, h.Starts(), h.State())
	}
	if !strings.Contains(log.String(), "Attempt 9 of 10") {
		t.Errorf("no retries logged:\n%s", log)
	}
}

func TestFunctionsHostGivesUpAfterThreeFailures(t *testing.T) {
	dir := newApp(t, "")
	h, log := startHost(t, dir, "exit:3", Options{})
	resp, err := http.Get(h.URL + "/echo") // waits for a handler that never comes
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != 500 {
			t.Errorf("status %d, want 500", resp.StatusCode)
		}
	}
	select {
	case <-h.Stopped():
	case <-time.After(10 * time.Second):
		t.Fatal("the host did not stop")
	}
	if h.Starts() != 3 || !strings.Contains(log.String(), "exited with code 3") || !strings.Contains(log.String(), "fatal: this handler cannot start") {
		t.Errorf("%d starts\n%s", h.Starts(), log)
	}
}

func TestFunctionsHostInitializationTimeout(t *testing.T) {
	dir := newApp(t, "")
	// The first start takes 2 s, more than the 1 s allowed: the host kills it and starts again.
	h, log := startHost(t, dir, "slowonce:2s", Options{InitializationTimeout: time.Second})
	start := time.Now()
	resp, body := get(t, h.URL+"/echo")
	if resp.StatusCode != 200 || h.Starts() != 2 || time.Since(start) < time.Second {
		t.Errorf("%d after %v, %d starts: %s\n%s", resp.StatusCode, time.Since(start), h.Starts(), body, log)
	}
	if !strings.Contains(log.String(), "Initializing HttpWorker timed out.") {
		t.Errorf("log:\n%s", log)
	}
}

func TestFunctionsHostFunctionTimeout(t *testing.T) {
	old := gracePeriod
	gracePeriod = 200 * time.Millisecond
	t.Cleanup(func() { gracePeriod = old })
	dir := newApp(t, "")
	h, log := startHost(t, dir, "serve", Options{FunctionTimeout: time.Second})
	waitReady(t, h)

	// No answer within the timeout: 500 after the grace period, then the handler is killed and
	// started again.
	start := time.Now()
	resp, _ := get(t, h.URL+"/sleep?d=5s")
	if took := time.Since(start); resp.StatusCode != 500 || took < time.Second || took > 3*time.Second {
		t.Errorf("%d after %v", resp.StatusCode, took)
	}
	waitStarts(t, h, 2)
	waitReady(t, h)
	if h.Starts() != 2 || !strings.Contains(log.String(), "Restarting worker process executing invocationId") {
		t.Errorf("%d starts\n%s", h.Starts(), log)
	}

	// Mid-stream: the caller's connection is cut, never ended cleanly.
	resp2, err := http.Get(h.URL + "/stream?n=20&gap=100ms")
	must(t, err)
	_, err = io.ReadAll(resp2.Body)
	resp2.Body.Close()
	if err == nil {
		t.Error("a stream cut by the function timeout ended cleanly")
	}
}

func TestFunctionsHostForwardsWebSocketUpgrades(t *testing.T) {
	dir := newApp(t, "")
	h, _ := startHost(t, dir, "serve", Options{ActivityTimeout: 500 * time.Millisecond})
	waitReady(t, h)

	conn, err := net.Dial("tcp", strings.TrimPrefix(h.URL, "http://"))
	must(t, err)
	defer conn.Close()
	fmt.Fprintf(conn, "GET /ws?deployment=x HTTP/1.1\r\nHost: caller.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	must(t, err)
	if resp.StatusCode != 101 || resp.Header.Get("Upgrade") != "websocket" || resp.Header.Get("X-Seen-Upgrade") != "websocket" {
		t.Fatalf("upgrade answer %d %v", resp.StatusCode, resp.Header)
	}
	conn.Write([]byte("frame-bytes"))
	buf := make([]byte, 11)
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "frame-bytes" {
		t.Fatalf("echo %q %v", buf, err)
	}
	// Idle past the activity timeout: the host closes the relay.
	start := time.Now()
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := br.ReadByte(); err == nil || time.Since(start) > 2*time.Second {
		t.Errorf("idle upgraded connection: %v after %v", err, time.Since(start))
	}

	// The same timeout while waiting for an answer: the forwarder gives up (504), the host answers 500.
	start = time.Now()
	if resp, _ := get(t, h.URL+"/sleep?d=3s"); resp.StatusCode != 500 || time.Since(start) > 2*time.Second {
		t.Errorf("slow answer: %d after %v", resp.StatusCode, time.Since(start))
	}
}

func TestFunctionsHostReadsHostJSON(t *testing.T) {
	for _, c := range []struct{ in, want string }{{"00:00:01", "1s"}, {"1.02:03:04.5", "26h3m4.5s"}, {"-1", "-24h0m0s"}, {"00:30:00", "30m0s"}} {
		d, err := parseTimeSpan(c.in)
		if err != nil || d.String() != c.want {
			t.Errorf("parseTimeSpan(%q) = %v, %v; want %s", c.in, d, err, c.want)
		}
	}
	f := function{route: []string{"api", "{*path}"}}
	for path, want := range map[string]bool{"/api": true, "/api/": true, "/api/x/y": true, "/x": false, "/": false} {
		if f.match(path) != want {
			t.Errorf("api/{*path} on %q: %v", path, !want)
		}
	}
	dir := newApp(t, `"functionTimeout": "-1",`)
	a, err := readApp(dir, nil)
	if err != nil || a.functionTimeout != 0 || a.initializationTimeout != 30*time.Second || a.routePrefix != "" {
		t.Errorf("%+v %v", a, err)
	}
}
