package e2e

// Hostile callers against the whole binary, on raw TCP so that no client tidies anything up:
// memory follows the bytes a caller sends, not the size it declares; callers still sending
// their body take no forwarding slot and get their own answer when their time is up; a caller
// that leaves cancels its upstream attempt at once and is logged as 499 without counting
// against the target; thousands of idle connections and a thousand pipelined requests are
// served correctly; and the request-smuggling shapes stay refused. Every wait is bounded.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aoai-failover/gateway/tests/aoaisim"
)

const callerChatPath = "/openai/deployments/chat/chat/completions?api-version=2024-10-21"

// procStatusKiB reads one field of /proc/<pid>/status that is given in kB (VmRSS, VmHWM).
func procStatusKiB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d", &kb); err != nil {
				t.Fatalf("/proc/%d/status %s: %q", pid, field, v)
			}
			return kb
		}
	}
	t.Fatalf("/proc/%d/status has no %s", pid, field)
	return 0
}

// azureShaped reports whether b is an error in the Azure OpenAI shape.
func azureShaped(b []byte) bool {
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	return json.Unmarshal(b, &e) == nil && e.Error.Code != "" && e.Error.Message != ""
}

// clip quotes at most the first 300 bytes of b, for messages.
func clip(b []byte) string {
	if len(b) > 300 {
		return fmt.Sprintf("%q... (%d bytes)", b[:300], len(b))
	}
	return fmt.Sprintf("%q", b)
}

// raiseFileLimit lifts this process's open-file soft limit to the hard limit, and fails the
// test if that still leaves fewer than need descriptors.
func raiseFileLimit(t *testing.T, need uint64) {
	t.Helper()
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	if rl.Cur < need {
		t.Fatalf("open-file limit %d is below the %d this test needs", rl.Cur, need)
	}
}

// dialAll opens n connections to addr, at most workers dials at a time (the machine's cores
// are shared), and runs first on each (what the caller sends, and reads, before it holds).
// The connections are closed at the end of the test.
func dialAll(t *testing.T, addr string, n, workers int, first func(i int, c net.Conn) error) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, n)
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	})
	var next, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				c, err := net.DialTimeout("tcp", addr, 10*time.Second)
				if err == nil {
					conns[i] = c
					_ = c.SetDeadline(time.Now().Add(10 * time.Second))
					err = first(i, c)
					_ = c.SetDeadline(time.Time{})
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("connection %d: %v", i, err))
				}
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of the connections could not be opened and started; first: %v", n, firstErr.Load())
	}
	return conns
}

// freshChat sends one chat request on a new connection and reports its status and how long
// the answer took.
func freshChat(t *testing.T, url, body string) (int, string, time.Duration) {
	t.Helper()
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	start := time.Now()
	resp, err := client.Post(url+callerChatPath, "application/json", strings.NewReader(body))
	if err != nil {
		return 0, err.Error(), time.Since(start)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), time.Since(start)
}

// TestMemoryBoundedByBytesReceived: callers each declare a 64 MiB body (allowed by the size
// limit) and send one byte of it, 64 at a time, in three waves: each wave holds, then leaves,
// and the next comes (memory a wave was given is reused by the next, so a reservation by
// declared size shows in resident memory even where fresh pages would not). While they hold,
// the instance stays under 256 MB of resident memory, and a normal request is served.
func TestMemoryBoundedByBytesReceived(t *testing.T) {
	const callers, waves, declared = 64, 3, 64 << 20
	const limitBytes = 256_000_000
	swc := startRegion(t, "swc", map[string]aoaisim.Deployment{"micro": {Model: "m"}})
	regions := map[string]*region{"swc": swc}
	doc := newRouting().account("swc", swc).target("chat", "swc", "micro", 1)
	doc.Limits = map[string]any{"maxRequestBodyBytes": declared}
	doc.Timeouts = map[string]any{"requestBody": "30s"} // the callers are still held when measured
	gw := startGateway(t, doc.env(regions), doc.secrets(regions)...)
	addr, pid := strings.TrimPrefix(gw.URL, "http://"), gw.cmd.Process.Pid

	if resp, body := chat(t, gw.URL, "chat", smallChat); resp.StatusCode != 200 {
		t.Fatalf("warm-up: %d %s", resp.StatusCode, body)
	}
	baseline := procStatusKiB(t, pid, "VmRSS")
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{", callerChatPath, declared)

	// sample records the peak resident size for d, and reports false as soon as it is over
	// the limit (the callers then leave at once: the machine is shared).
	var peak int64
	sample := func(d time.Duration) bool {
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			peak = max(peak, procStatusKiB(t, pid, "VmRSS"))
			if peak*1024 >= limitBytes {
				return false
			}
		}
		return true
	}
	for wave := 1; wave <= waves; wave++ {
		conns := dialAll(t, addr, callers, 16, func(_ int, c net.Conn) error {
			_, err := io.WriteString(c, head)
			return err
		})
		// Sample the resident size while they hold, with a normal request in the middle.
		under := sample(700 * time.Millisecond)
		if status, body, took := freshChat(t, gw.URL, smallChat); status != 200 {
			t.Errorf("wave %d: a normal request while the callers hold: %d after %s: %s", wave, status, took, body)
		}
		if !under || !sample(300*time.Millisecond) {
			for _, c := range conns {
				c.Close()
			}
			t.Errorf("wave %d: resident memory over the limit", wave)
			break
		}

		// The measurement means something only if the callers were still held: nothing
		// answered or closed them.
		var held atomic.Int64
		var wg sync.WaitGroup
		for _, c := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				n, err := c.Read(make([]byte, 1))
				var ne net.Error
				if n == 0 && errors.As(err, &ne) && ne.Timeout() {
					held.Add(1)
				}
			}()
		}
		wg.Wait()
		if held.Load() != callers {
			t.Errorf("wave %d: only %d of %d callers were still held when measured (answered or closed early, though a %d-byte declared body is within the limit and its time)",
				wave, held.Load(), callers, declared)
		}
		for _, c := range conns { // this wave leaves; the next comes
			c.Close()
		}
		if !sample(300 * time.Millisecond) {
			t.Errorf("wave %d: resident memory over the limit after the callers left", wave)
			break
		}
	}
	hwm := procStatusKiB(t, pid, "VmHWM")
	mb := func(kib int64) int64 { return kib * 1024 / 1_000_000 }
	t.Logf("resident memory: baseline %d MB, peak while %d waves of %d callers held %d MB, high-water mark %d MB",
		mb(baseline), waves, callers, mb(peak), mb(hwm))
	if peak*1024 >= limitBytes || hwm*1024 >= limitBytes {
		t.Errorf("resident memory reached %d MB (high-water %d MB) with %d callers at a time each declaring %d MiB and sending 1 byte; want under 256 MB: memory must follow the bytes received",
			mb(peak), mb(hwm), callers, declared>>20)
	}
	if status, body, _ := freshChat(t, gw.URL, smallChat); status != 200 {
		t.Errorf("a normal request after the waves: %d %s", status, body)
	}
}

// TestSlowBodiesDoNotTakeForwardingSlots: 4,096 callers send a complete head and 10 of the 100
// bytes they declare, then hold. With a forwarding limit of 8, a caller with a complete
// request is still served at once; and when their body deadline passes, the slow callers each
// get their own answer: 408 (or 503 if an intake bound was reached), in the Azure error shape.
func TestSlowBodiesDoNotTakeForwardingSlots(t *testing.T) {
	raiseFileLimit(t, 4096+1024)
	t.Run("forwarding limit 8", func(t *testing.T) { slowBodies(t, 8) })
	t.Run("default forwarding limit", func(t *testing.T) { slowBodies(t, 0) })
}

// slowBodies runs TestSlowBodiesDoNotTakeForwardingSlots with limits.maxConcurrentRequests
// set to maxConcurrent (0: the default).
func slowBodies(t *testing.T, maxConcurrent int) {
	const slow = 4096
	const bodyTimeout = 5 * time.Second
	swc := startRegion(t, "swc", map[string]aoaisim.Deployment{"micro": {Model: "m"}})
	regions := map[string]*region{"swc": swc}
	doc := newRouting().account("swc", swc).target("chat", "swc", "micro", 1)
	if maxConcurrent > 0 {
		doc.Limits = map[string]any{"maxConcurrentRequests": maxConcurrent}
	}
	doc.Timeouts = map[string]any{"requestBody": bodyTimeout.String()}
	gw := startGateway(t, doc.env(regions), doc.secrets(regions)...)
	addr := strings.TrimPrefix(gw.URL, "http://")

	if resp, body := chat(t, gw.URL, "chat", smallChat); resp.StatusCode != 200 {
		t.Fatalf("warm-up: %d %s", resp.StatusCode, body)
	}
	head := "POST " + callerChatPath + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n" + `{"messages`
	began := time.Now()
	sent := make([]time.Time, slow)
	conns := dialAll(t, addr, slow, 32, func(i int, c net.Conn) error {
		_, err := io.WriteString(c, head)
		sent[i] = time.Now()
		return err
	})
	dialled := time.Since(began)
	time.Sleep(300 * time.Millisecond) // the gateway reads the last heads

	status, body, took := freshChat(t, gw.URL, smallChat)
	checkedAt := time.Since(began)
	t.Logf("%d slow callers dialled in %s; a complete request answered %d in %s", slow, dialled.Round(time.Millisecond), status, took.Round(time.Millisecond))
	if status != 200 || took > 2*time.Second {
		t.Errorf("a complete request with %d callers still sending their bodies: %d after %s, want 200 at once: %s", slow, status, took, body)
	}
	if checkedAt >= bodyTimeout {
		t.Errorf("the complete request was checked %s after the first slow caller started, past its %s body deadline: dialling was too slow for the check to mean anything", checkedAt, bodyTimeout)
	}

	// Every slow caller gets its own answer once its body deadline has passed.
	type answer struct {
		status  int
		elapsed time.Duration
		azure   bool
		err     error
	}
	answers := make([]answer, slow)
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.SetReadDeadline(sent[i].Add(bodyTimeout + 15*time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				answers[i] = answer{err: err, elapsed: time.Since(sent[i])}
				return
			}
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			answers[i] = answer{status: resp.StatusCode, elapsed: time.Since(sent[i]), azure: azureShaped(b)}
		}()
	}
	wg.Wait()
	counts := map[string]int{}
	var problems []string
	for i, a := range answers {
		var problem string
		switch {
		case a.err != nil:
			counts["no answer"]++
			problem = fmt.Sprintf("no answer after %s: %v", a.elapsed.Round(time.Millisecond), a.err)
		case a.status == http.StatusRequestTimeout:
			counts["408"]++
			if a.elapsed < bodyTimeout-500*time.Millisecond {
				problem = fmt.Sprintf("408 after %s, before the %s body deadline", a.elapsed.Round(time.Millisecond), bodyTimeout)
			}
		case a.status == http.StatusServiceUnavailable:
			counts["503"]++
		default:
			counts[fmt.Sprint(a.status)]++
			problem = fmt.Sprintf("status %d, want 408 (or 503 at an intake bound)", a.status)
		}
		if problem == "" && !a.azure {
			problem = fmt.Sprintf("status %d not in the Azure error shape", a.status)
		}
		if problem != "" {
			problems = append(problems, fmt.Sprintf("caller %d: %s", i, problem))
		}
	}
	t.Logf("the slow callers' answers: %v", counts)
	if len(problems) > 0 {
		t.Errorf("%d of %d slow callers did not get their own answer at their deadline; first: %s", len(problems), slow, strings.Join(problems[:min(5, len(problems))], "; "))
	}
	if status, body, _ := freshChat(t, gw.URL, smallChat); status != 200 {
		t.Errorf("a normal request after the slow callers: %d %s", status, body)
	}
}

// upstreamWatch wraps a simulated account's handler and records, for each request carrying an
// X-Test-Case header, when it arrived and when its context ended: a context that ends while
// the simulator is still answering means the gateway cancelled the upstream request.
type upstreamWatch struct {
	next http.Handler
	mu   sync.Mutex
	seen map[string]*upstreamCall
}

type upstreamCall struct {
	arrived   time.Time
	finished  time.Time // the simulator returned
	cancelled time.Time // when the request's context ended, if before the answer was complete
	requestID string    // the apim-request-id the simulator gave it
}

func (u *upstreamWatch) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get("X-Test-Case")
	if id == "" {
		u.next.ServeHTTP(w, r)
		return
	}
	u.mu.Lock()
	u.seen[id] = &upstreamCall{arrived: time.Now()}
	u.mu.Unlock()
	fired := make(chan struct{})
	var endedAt time.Time
	stop := context.AfterFunc(r.Context(), func() { endedAt = time.Now(); close(fired) })
	u.next.ServeHTTP(w, r)
	finished := time.Now()
	cut := r.Context().Err() != nil // the simulator stops as soon as its context ends
	if !stop() {
		<-fired
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	rec := u.seen[id]
	rec.finished = finished
	rec.requestID = w.Header().Get("Apim-Request-Id")
	if cut {
		// The context can end a moment before its AfterFunc is started (or instead of it,
		// when stop wins): then the simulator's return is the time.
		rec.cancelled = finished
		if !endedAt.IsZero() && endedAt.Before(finished) {
			rec.cancelled = endedAt
		}
	}
}

func (u *upstreamWatch) call(id string) (upstreamCall, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	rec, ok := u.seen[id]
	if !ok {
		return upstreamCall{}, false
	}
	return *rec, true
}

// startWatchedRegion is startRegion with an upstreamWatch in front of the simulator.
func startWatchedRegion(t *testing.T, name string, deployments map[string]aoaisim.Deployment) (*region, *upstreamWatch) {
	t.Helper()
	key := "sim-key-" + name + "-5f1e2d"
	sim, err := aoaisim.New(aoaisim.Config{APIKey: key, Region: name, Deployments: deployments})
	if err != nil {
		t.Fatal(err)
	}
	watch := &upstreamWatch{next: sim, seen: map[string]*upstreamCall{}}
	srv := httptest.NewServer(watch)
	t.Cleanup(srv.Close)
	return &region{Sim: sim, Srv: srv, Key: key}, watch
}

// requestLines returns the gateway's per-request log records in out.
func requestLines(out string) []map[string]any {
	var recs []map[string]any
	for _, line := range strings.Split(out, "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "request" {
			recs = append(recs, rec)
		}
	}
	return recs
}

// targetState reads one target's state from /status.
func targetState(t *testing.T, url, logical, target string) (state string, failures int) {
	t.Helper()
	resp, err := http.Get(url + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s struct {
		Deployments map[string][]struct {
			State struct {
				Target              string `json:"target"`
				State               string `json:"state"`
				ConsecutiveFailures int    `json:"consecutiveFailures"`
			} `json:"state"`
		} `json:"deployments"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatalf("/status: %v", err)
	}
	for _, e := range s.Deployments[logical] {
		if e.State.Target == target {
			return e.State.State, e.State.ConsecutiveFailures
		}
	}
	return "absent", 0
}

// TestCallerLeavingCancelsUpstream: a caller leaves while its slow completion (5 s, plain or
// streamed) is running upstream: it closes the connection, or half-closes it, each with or
// without a stray pipelined byte after its request. In every case the upstream request is
// cancelled within 100 ms, the caller is sent nothing more (a half-closed caller gets no
// made-up success), the request is logged as 499, and the target is neither marked failing
// nor passed over: the next request is served by it.
func TestCallerLeavingCancelsUpstream(t *testing.T) {
	swc, watch := startWatchedRegion(t, "swc", map[string]aoaisim.Deployment{
		"slow": {Model: "m", PerToken: aoaisim.Duration(100 * time.Millisecond), CompletionTokens: 50},
	})
	frc := startRegion(t, "frc", map[string]aoaisim.Deployment{"micro": {Model: "m"}})
	regions := map[string]*region{"swc": swc, "frc": frc}
	// frc is second: a request that skipped swc/slow would show it in x-served-by.
	doc := newRouting().account("swc", swc).account("frc", frc).target("chat", "swc", "slow", 1).target("chat", "frc", "micro", 2)
	gw := startGateway(t, doc.env(regions), doc.secrets(regions)...)
	addr := strings.TrimPrefix(gw.URL, "http://")

	const plainBody = `{"messages":[{"role":"user","content":"Tell me a long story."}]}`
	const streamBody = `{"messages":[{"role":"user","content":"Tell me a long story."}],"stream":true}`
	const shortBody = `{"model":"chat","messages":[{"role":"user","content":"hi"}],"max_tokens":1}`
	statusLine2xx := regexp.MustCompile(`^HTTP/1\.[01] 2`)
	followUps := 0

	for _, stream := range []bool{false, true} {
		for _, leave := range []struct {
			name      string
			halfClose bool
			stray     bool
		}{
			{"close", false, false},
			{"half-close", true, false},
			{"stray byte then close", false, true},
			{"stray byte then half-close", true, true},
		} {
			name := map[bool]string{false: "plain/", true: "stream/"}[stream] + leave.name
			t.Run(name, func(t *testing.T) {
				id := strings.NewReplacer("/", "-", " ", "-").Replace(name)
				body := plainBody
				if stream {
					body = streamBody
				}
				logFrom := len(gw.stdout.String())
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				raw := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Test-Case: %s\r\nContent-Length: %d\r\n\r\n%s",
					callerChatPath, id, len(body), body)
				if leave.stray {
					raw += "P" // the first byte of a next request that never comes
				}
				if _, err := io.WriteString(c, raw); err != nil {
					t.Fatal(err)
				}
				waitFor(t, "the request upstream", 5*time.Second, func() bool { _, ok := watch.call(id); return ok })

				// A stream has started before the caller leaves: read its head, so that what
				// comes after leaving can be told apart.
				var before []byte
				if stream {
					_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
					buf := make([]byte, 4096)
					for !bytes.Contains(before, []byte("\r\n\r\n")) {
						n, err := c.Read(buf)
						before = append(before, buf[:n]...)
						if err != nil {
							t.Fatalf("the stream's head before leaving: %v (got %s)", err, clip(before))
						}
					}
					h := strings.ToLower(string(before))
					if !statusLine2xx.MatchString(string(before)) || !strings.Contains(h, "x-served-by: swc/slow") {
						t.Fatalf("the stream did not start as served by swc/slow: %s", clip(before))
					}
				}
				time.Sleep(200 * time.Millisecond) // the attempt is well under way
				if stream {                        // take what has come, so that a close is a clean one (FIN, not RST)
					_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
					_, _ = io.Copy(io.Discard, c)
				}

				left := time.Now()
				if leave.halfClose {
					if err := c.(*net.TCPConn).CloseWrite(); err != nil {
						t.Fatal(err)
					}
				} else {
					c.Close()
				}

				// What a half-closed caller still receives, and when.
				var after []byte
				var lastByteAt time.Time
				if leave.halfClose {
					_ = c.SetReadDeadline(left.Add(time.Second))
					buf := make([]byte, 4096)
					for {
						n, err := c.Read(buf)
						if n > 0 {
							after = append(after, buf[:n]...)
							lastByteAt = time.Now()
						}
						if err != nil {
							break
						}
					}
				}

				// The upstream request was cancelled, within 100 ms.
				deadline := time.Now().Add(time.Second)
				rec, _ := watch.call(id)
				for rec.finished.IsZero() && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond)
					rec, _ = watch.call(id)
				}
				switch {
				case rec.finished.IsZero():
					t.Errorf("the upstream request was still running %s after the caller left", time.Since(left).Round(time.Millisecond))
				case rec.cancelled.IsZero():
					t.Errorf("the upstream request ran to its end after the caller left")
				case rec.cancelled.Sub(left) > 100*time.Millisecond:
					t.Errorf("the upstream request was cancelled %s after the caller left, want within 100ms", rec.cancelled.Sub(left).Round(time.Millisecond))
				default:
					t.Logf("upstream cancelled %s after the caller left", rec.cancelled.Sub(left).Round(time.Microsecond))
				}

				// Nothing more reached the caller after it left.
				if leave.halfClose {
					if !stream && statusLine2xx.Match(after) {
						t.Errorf("a half-closed caller was sent a success it never got from upstream: %s", clip(after))
					}
					if stream && (bytes.Contains(after, []byte("[DONE]")) || statusLine2xx.Match(after)) {
						t.Errorf("a half-closed caller's stream went on to an end or a new answer: %s", clip(after))
					}
					if len(after) > 0 && lastByteAt.Sub(left) > 250*time.Millisecond {
						t.Errorf("the gateway still sent %d bytes %s after the caller left: %s", len(after), lastByteAt.Sub(left).Round(time.Millisecond), clip(after))
					}
				}

				// One request record, status 499. (A record naming another upstream request
				// is an earlier case's, logged late.)
				rec, _ = watch.call(id)
				var recs []map[string]any
				logDeadline := time.Now().Add(2 * time.Second)
				for {
					recs = nil
					for _, r := range requestLines(gw.stdout.String()[logFrom:]) {
						p, _ := r["path"].(string)
						up, _ := r["upstreamRequestId"].(string)
						if strings.HasPrefix(p, "/openai/deployments/chat/") && (up == "" || up == rec.requestID) {
							recs = append(recs, r)
						}
					}
					if len(recs) > 0 || time.Now().After(logDeadline) {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
				if len(recs) != 1 || recs[0]["status"] != float64(499) {
					t.Errorf("request log records for the caller that left: %v, want one with status 499", recs)
				}

				// The target is not held responsible: available, no failures, and it serves
				// the next request.
				if state, failures := targetState(t, gw.URL, "chat", "swc/slow"); state != "available" || failures != 0 {
					t.Errorf("swc/slow after the caller left: state %q, %d consecutive failures; want available, 0", state, failures)
				}
				// (On the v1 route, so that its log record is not taken for the one above.)
				req, _ := http.NewRequest(http.MethodPost, gw.URL+"/openai/v1/chat/completions", strings.NewReader(shortBody))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-Test-Case", id+"-next")
				resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
				if err != nil {
					t.Fatalf("the next request: %v", err)
				}
				text, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				followUps++
				if resp.StatusCode != 200 || resp.Header.Get("X-Served-By") != "swc/slow" {
					t.Errorf("the next request: %d served by %q, want 200 by swc/slow: %s", resp.StatusCode, resp.Header.Get("X-Served-By"), clip(text))
				}
			})
		}
	}
	if st := swc.Sim.Stats()["slow"]; st.Served != followUps {
		t.Errorf("swc/slow completed %d answers, want only the %d follow-up requests: the completions of callers that left were finished anyway", st.Served, followUps)
	}
}

// TestManyIdleAndPipelined: 2,000 idle keep-alive connections do not stop a normal request
// (and stay usable); 1,000 requests pipelined on one connection (chat completions, GET and
// HEAD /healthz, mixed) are all answered, in order, each correctly framed.
func TestManyIdleAndPipelined(t *testing.T) {
	const idle, pipelined = 2000, 1000
	raiseFileLimit(t, idle+1024)
	swc := startRegion(t, "swc", map[string]aoaisim.Deployment{"micro": {Model: "m", CompletionTokens: 64}})
	regions := map[string]*region{"swc": swc}
	doc := newRouting().account("swc", swc).target("chat", "swc", "micro", 1)
	gw := startGateway(t, doc.env(regions), doc.secrets(regions)...)
	addr, pid := strings.TrimPrefix(gw.URL, "http://"), gw.cmd.Process.Pid

	t.Run("2,000 idle keep-alive connections", func(t *testing.T) {
		readers := make([]*bufio.Reader, idle)
		healthz := func(c net.Conn, br *bufio.Reader) error {
			if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				return err
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.Close {
				return fmt.Errorf("GET /healthz: %d, close %v", resp.StatusCode, resp.Close)
			}
			return nil
		}
		conns := dialAll(t, addr, idle, 32, func(i int, c net.Conn) error {
			readers[i] = bufio.NewReader(c)
			return healthz(c, readers[i])
		})
		if n := openSockets(t, pid); n < idle {
			t.Errorf("the gateway holds %d sockets, fewer than the %d idle connections", n, idle)
		}
		status, body, took := freshChat(t, gw.URL, smallChat)
		t.Logf("with %d idle connections open: a new caller answered %d in %s", idle, status, took.Round(time.Millisecond))
		if status != 200 || took > 2*time.Second {
			t.Errorf("a normal request with %d idle connections open: %d after %s, want 200 at once: %s", idle, status, took, body)
		}
		for i := 0; i < idle; i += idle / 40 { // a sample of them is still usable
			_ = conns[i].SetDeadline(time.Now().Add(10 * time.Second))
			if err := healthz(conns[i], readers[i]); err != nil {
				t.Errorf("idle connection %d, second request: %v", i, err)
			}
		}
	})

	t.Run("1,000 pipelined requests", func(t *testing.T) {
		type sent struct {
			method string
			tokens int // a chat request's max_tokens, which its answer's usage reports
		}
		var reqs []sent
		var wire bytes.Buffer
		for i := 0; i < pipelined; i++ {
			switch {
			case i%10 == 9:
				reqs = append(reqs, sent{method: "HEAD"})
				wire.WriteString("HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
			case i%2 == 1:
				reqs = append(reqs, sent{method: "GET"})
				wire.WriteString("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
			default:
				tokens := 1 + i%61
				body := fmt.Sprintf(`{"messages":[{"role":"user","content":"request %d"}],"max_tokens":%d}`, i, tokens)
				reqs = append(reqs, sent{method: "POST", tokens: tokens})
				fmt.Fprintf(&wire, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", callerChatPath, len(body), body)
			}
		}
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(40 * time.Second))
		writeErr := make(chan error, 1)
		go func() { // written while the answers are read: neither side's buffers can fill up
			_, err := c.Write(wire.Bytes())
			writeErr <- err
		}()
		br := bufio.NewReader(c)
		start := time.Now()
		for i, r := range reqs {
			resp, err := http.ReadResponse(br, &http.Request{Method: r.method})
			if err != nil {
				t.Fatalf("answer %d of %d (%s): %v", i+1, pipelined, r.method, err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatalf("answer %d (%s): body: %v", i+1, r.method, err)
			}
			if resp.StatusCode != 200 {
				t.Fatalf("answer %d (%s): status %d: %s", i+1, r.method, resp.StatusCode, b)
			}
			switch r.method {
			case "HEAD":
				if len(b) != 0 {
					t.Fatalf("answer %d (HEAD /healthz) has a body: %q", i+1, b)
				}
			case "GET":
				var h struct{ Status string }
				if json.Unmarshal(b, &h) != nil || h.Status != "ok" || resp.Header.Get("X-Served-By") != "none" {
					t.Fatalf("answer %d is not GET /healthz's: %q", i+1, b)
				}
			case "POST":
				var a struct {
					Choices []struct {
						Message struct{ Content string } `json:"message"`
					} `json:"choices"`
					Usage struct {
						CompletionTokens int `json:"completion_tokens"`
					} `json:"usage"`
				}
				if json.Unmarshal(b, &a) != nil || len(a.Choices) != 1 || a.Choices[0].Message.Content == "" ||
					a.Usage.CompletionTokens != r.tokens || resp.Header.Get("X-Served-By") != "swc/micro" {
					t.Fatalf("answer %d is not its chat request's (max_tokens %d): %q", i+1, r.tokens, b)
				}
			}
			if resp.Close {
				if i+1 < pipelined {
					t.Fatalf("the gateway closed the connection after answer %d of %d", i+1, pipelined)
				}
			}
		}
		if err := <-writeErr; err != nil {
			t.Errorf("writing the pipelined requests: %v", err)
		}
		t.Logf("%d pipelined requests answered in order in %s", pipelined, time.Since(start).Round(time.Millisecond))
		// Nothing follows the last answer.
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if n, _ := br.Read(make([]byte, 1)); n != 0 {
			t.Errorf("bytes after the %dth answer", pipelined)
		}
	})
}

// TestHostileCallerFraming: the request-smuggling and framing shapes are refused whatever
// server the caller side uses: each is answered once, with a client error in the Azure shape,
// and the connection ends there, so the request smuggled behind it is never answered; the
// backend never sees either.
func TestHostileCallerFraming(t *testing.T) {
	swc := startRegion(t, "swc", map[string]aoaisim.Deployment{"micro": {Model: "m"}})
	regions := map[string]*region{"swc": swc}
	doc := newRouting().account("swc", swc).target("chat", "swc", "micro", 1)
	gw := startGateway(t, doc.env(regions), doc.secrets(regions)...)
	addr := strings.TrimPrefix(gw.URL, "http://")

	const body = `{"messages":[{"role":"user","content":"hi"}]}`
	const smuggled = "POST /openai/deployments/smuggled/chat/completions?api-version=1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
	chunked := fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(body), body)
	head := func(headers string) string {
		return "POST " + callerChatPath + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + headers + "\r\n"
	}
	// The control: a well-framed request with the same one behind it gets both answered,
	// so that the refusals below are the shapes', not the test's.
	t.Run("control", func(t *testing.T) {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, head(fmt.Sprintf("Content-Length: %d\r\n", len(body)))+body+smuggled); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		for i, want := range []int{200, 404} {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("answer %d: %v", i+1, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != want || (want == 404 && !strings.Contains(string(b), "smuggled")) {
				t.Fatalf("answer %d: %d %s, want %d", i+1, resp.StatusCode, clip(b), want)
			}
		}
	})
	for _, tc := range []struct{ name, raw string }{
		{"CL.TE", head("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n") + "0\r\n\r\n"},
		{"TE.CL", head(fmt.Sprintf("Transfer-Encoding: chunked\r\nContent-Length: %d\r\n", len(chunked))) + chunked},
		{"TE unknown coding", head("Transfer-Encoding: xchunked\r\n") + chunked},
		{"TE coding list", head("Transfer-Encoding: gzip, chunked\r\n") + chunked},
		{"TE twice", head("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n") + chunked},
		{"TE with space before the colon", head("Transfer-Encoding : chunked\r\n") + chunked},
		{"TE with a vertical tab", head("Transfer-Encoding:\x0bchunked\r\n") + chunked},
		{"TE in an obs-fold", head("X-Note: a\r\n Transfer-Encoding: chunked\r\n") + chunked},
		{"two different lengths", head(fmt.Sprintf("Content-Length: %d\r\nContent-Length: 0\r\n", len(body))) + body},
		{"length list", head(fmt.Sprintf("Content-Length: %d, 0\r\n", len(body))) + body},
		{"signed length", head(fmt.Sprintf("Content-Length: +%d\r\n", len(body))) + body},
		{"negative length", head("Content-Length: -1\r\n") + body},
		{"overflowing length", head("Content-Length: 99999999999999999999\r\n") + body},
		{"NUL in a header value", head("X-Note: a\x00b\r\nContent-Length: "+fmt.Sprint(len(body))+"\r\n") + body},
		{"chunk size overflow", head("Transfer-Encoding: chunked\r\n") + "1" + strings.Repeat("0", 16) + "\r\n" + body + "\r\n0\r\n\r\n"},
		{"chunk line ending in a bare LF", head("Transfer-Encoding: chunked\r\n") + fmt.Sprintf("%x\n%s\r\n0\r\n\r\n", len(body), body)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := swc.Sim.Stats()["micro"].Requests
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(c, tc.raw+smuggled); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 400 && resp.StatusCode != 413 && resp.StatusCode != 501 {
				t.Errorf("status %d, want the shape refused (400, 413 or 501): %s", resp.StatusCode, b)
			}
			if !azureShaped(b) {
				t.Errorf("the refusal is not in the Azure error shape: %q", b)
			}
			// The connection ends after the refusal: the smuggled request gets no answer.
			if more, err := br.ReadString('\n'); more != "" || err == nil {
				t.Errorf("the connection went on after the refusal: %q", more)
			}
			if after := swc.Sim.Stats()["micro"].Requests; after != before {
				t.Errorf("the backend received %d request(s)", after-before)
			}
		})
	}
}
