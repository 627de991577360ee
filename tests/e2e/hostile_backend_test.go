package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The hostile-backend suite: a backend that frames its answers wrongly, sends bytes nobody
// asked for, or stalls, must cost the caller whose request it was answering a failover or a
// clean error, never hand anyone another caller's answer, never hang, and never have its
// connection used again. Each case runs its own gateway with two targets of one logical
// deployment: "bad/hostile" (priority 1, a raw backend that misbehaves while the case's first
// request is in flight, and answers well after) and "good/healthy" (priority 2, a raw backend
// that always answers well). Every answer of either carries the text of the request it
// answers (the caller's marker), so whose answer a caller received is always known.

const (
	hbHostile = "bad/hostile"
	hbHealthy = "good/healthy"
)

// hbOutcome is what a caller received, as far as this suite tells outcomes apart.
type hbOutcome int

const (
	// hbFailover: the healthy target's answer, the caller's own, whole.
	hbFailover hbOutcome = 1 << iota
	// hbHostileOwn: the hostile target's answer, read as its framing rules say, the caller's
	// own and whole (for a 204 or 304: no body, the caller's marker in X-Echo).
	hbHostileOwn
	// hbCleanError: an error of the gateway's own, in Azure's JSON shape.
	hbCleanError
	// hbInBandError: a stream from the hostile target that the gateway ended with an in-band
	// error event after it had started, without [DONE].
	hbInBandError
)

func (o hbOutcome) String() string {
	var s []string
	for _, n := range []struct {
		o    hbOutcome
		name string
	}{{hbFailover, "failover"}, {hbHostileOwn, "the hostile target's own answer"}, {hbCleanError, "a clean Azure error"}, {hbInBandError, "an in-band stream error"}} {
		if o&n.o != 0 {
			s = append(s, n.name)
		}
	}
	if len(s) == 0 {
		return "nothing acceptable"
	}
	return strings.Join(s, " or ")
}

// hbCase is one way of misbehaving.
type hbCase struct {
	name string
	// stream: the case's requests ask for a stream.
	stream bool
	// answer is how the hostile backend answers while the case's first request is in flight;
	// it calls Misbehave on the connection before it writes anything wrong.
	answer rbAnswer
	// idle, instead of answer: the first request is answered well, then idle(stray) is written
	// on the kept connection while no request is in flight.
	idle func(stray string) string
	// accept is what the case's first caller may receive.
	accept hbOutcome
	// control: the backend does nothing wrong (a check that the suite tells the difference).
	control bool
}

// stray is the marker of an answer no caller asked for.
func hbStray(r *rbRequest) string { return r.Marker + "-stray" }

func hostileBackendCases() []hbCase {
	misbehave := func(what string, write func(r *rbRequest) string) rbAnswer {
		return func(c *rbConn, r *rbRequest) {
			c.Misbehave(what)
			_ = c.Write(write(r))
		}
	}
	any3 := hbFailover | hbHostileOwn | hbCleanError
	mustFail := hbFailover | hbCleanError
	informational := func(status string, n int) func(r *rbRequest) string {
		return func(r *rbRequest) string {
			return strings.Repeat("HTTP/1.1 "+status+"\r\nLink: </hint.css>; rel=preload\r\n\r\n", n) + rbPlain(r.Marker)
		}
	}
	return []hbCase{
		// a) bytes after a declared body.
		{name: "second response after a Content-Length body", accept: any3,
			answer: misbehave("sent a second response after its answer", func(r *rbRequest) string {
				return rbPlain(r.Marker) + rbPlain(hbStray(r))
			})},
		{name: "second response after a whole chunked stream", stream: true, accept: any3,
			answer: misbehave("sent a second response after its stream", func(r *rbRequest) string {
				return rbStream(r.Marker) + rbStream(hbStray(r))
			})},
		// b) 204 and 304 with a body.
		{name: "204 with a declared body", accept: any3,
			answer: misbehave("sent a body with a 204", func(r *rbRequest) string {
				body := rbPlain(hbStray(r))
				return "HTTP/1.1 204 No Content\r\nX-Echo: " + r.Marker + "\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
			})},
		{name: "204 followed by a response", accept: any3,
			answer: misbehave("sent bytes after a 204", func(r *rbRequest) string {
				return "HTTP/1.1 204 No Content\r\nX-Echo: " + r.Marker + "\r\n\r\n" + rbPlain(hbStray(r))
			})},
		{name: "304 with a declared body", accept: any3,
			answer: misbehave("sent a body with a 304", func(r *rbRequest) string {
				body := rbPlain(hbStray(r))
				return "HTTP/1.1 304 Not Modified\r\nX-Echo: " + r.Marker + "\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
			})},
		// c) Content-Length and Transfer-Encoding: chunked together.
		{name: "Content-Length and chunked, a response after the chunks", accept: any3,
			answer: misbehave("framed its answer with both Content-Length and chunked", func(r *rbRequest) string {
				body := rbChunk(rbCompletion(r.Marker)) + "0\r\n\r\n"
				return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Echo: " + r.Marker + "\r\nContent-Length: " + strconv.Itoa(len(body)) +
					"\r\nTransfer-Encoding: chunked\r\n\r\n" + body + rbPlain(hbStray(r))
			})},
		// Both framings and nothing after: net/http's Transport reads it by the chunked framing
		// (RFC 9112 6.3: Transfer-Encoding overrides Content-Length) and the body ends exactly
		// where the chunks say, so the connection is in step and may be used again; what it
		// guards against, bytes after that end, is the case above. The caller gets its own
		// answer, and so does each caller after it.
		{name: "Content-Length shorter than the chunks, nothing after", accept: hbHostileOwn, control: true,
			answer: func(c *rbConn, r *rbRequest) {
				_ = c.Write("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Echo: " + r.Marker + "\r\nTransfer-Encoding: chunked\r\nContent-Length: 10\r\n\r\n" +
					rbChunk(rbCompletion(r.Marker)) + "0\r\n\r\n")
			}},
		// d) bad and overflowing chunk sizes.
		{name: "chunk size not hex", accept: mustFail,
			answer: misbehave("sent a chunk size that is not hex", func(r *rbRequest) string {
				return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Echo: " + r.Marker + "\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" +
					rbCompletion(r.Marker) + "\r\n0\r\n\r\n"
			})},
		{name: "chunk size overflowing 64 bits", accept: mustFail,
			answer: misbehave("sent a chunk size over 64 bits", func(r *rbRequest) string {
				return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Echo: " + r.Marker + "\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n" +
					rbCompletion(r.Marker) + "\r\n0\r\n\r\n"
			})},
		{name: "chunk size that wraps to zero", accept: mustFail,
			answer: misbehave("sent a chunk size of 2^64", func(r *rbRequest) string {
				// A reader that wraps 2^64 to 0 sees the body's end here and the next
				// response right after it.
				return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Echo: " + r.Marker + "\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n\r\n" +
					rbPlain(hbStray(r))
			})},
		// e) 1xx other than 100, and 101: a failure of the target, never a success.
		{name: "flood of 200 103 Early Hints", accept: hbFailover,
			answer: misbehave("sent 200 informational responses", informational("103 Early Hints", 200))},
		{name: "one 103 Early Hints", accept: hbFailover,
			answer: misbehave("sent a 103", informational("103 Early Hints", 1))},
		{name: "one 102 Processing", accept: hbFailover,
			answer: misbehave("sent a 102", informational("102 Processing", 1))},
		{name: "101 Switching Protocols", accept: hbFailover,
			answer: misbehave("switched protocols", func(r *rbRequest) string {
				// The connection stays open: it belongs to another protocol now.
				return "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nX-Echo: " + r.Marker + "\r\n\r\n" + rbPlain(hbStray(r))
			})},
		{name: "100 Continue before the answer", accept: hbFailover | hbHostileOwn, control: true,
			answer: func(c *rbConn, r *rbRequest) { // 100 is the one 1xx that is not a misbehaviour
				_ = c.Write("HTTP/1.1 100 Continue\r\n\r\n" + rbPlain(r.Marker))
			}},
		// f) bytes on an idle kept connection.
		{name: "408 on an idle connection",
			idle: func(string) string {
				body := `{"error":{"code":"RequestTimeout","message":"idle connection closed"}}`
				return "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
			}},
		{name: "a whole response on an idle connection",
			idle: func(s string) string { return rbPlain(s) }},
		// g) a head over 1 MiB, and a head that never ends.
		{name: "head over 1 MiB", accept: mustFail,
			answer: misbehave("sent a head over 1 MiB", func(r *rbRequest) string {
				var h strings.Builder
				h.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Echo: " + r.Marker + "\r\n")
				pad := strings.Repeat("a", 1000)
				for i := 0; i < 1100; i++ {
					fmt.Fprintf(&h, "X-Pad-%04d: %s\r\n", i, pad)
				}
				body := rbCompletion(r.Marker)
				return h.String() + "Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
			})},
		{name: "head one byte at a time forever", accept: mustFail,
			answer: func(c *rbConn, r *rbRequest) {
				c.Misbehave("sent its head one byte at a time")
				c.Drip("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Slow: ", 'a', 50*time.Millisecond)
			}},
		// h) a close in the middle of the head, and of the body.
		{name: "close in the middle of the head", accept: mustFail,
			answer: func(c *rbConn, r *rbRequest) {
				c.Misbehave("closed in the middle of its head")
				_ = c.Write("HTTP/1.1 200 OK\r\nContent-Type: applic")
				c.Close()
			}},
		{name: "close in the middle of the body", accept: mustFail,
			answer: func(c *rbConn, r *rbRequest) {
				c.Misbehave("closed in the middle of its body")
				whole := rbPlain(r.Marker)
				_ = c.Write(whole[:len(whole)-40])
				c.Close()
			}},
		{name: "close in the middle of a stream", stream: true, accept: hbFailover | hbInBandError,
			answer: func(c *rbConn, r *rbRequest) {
				c.Misbehave("closed in the middle of its stream")
				evs := rbEvents(r.Marker)
				_ = c.Write(rbStreamHead(r.Marker) + rbChunk(evs[0]) + rbChunk(evs[1]))
				time.Sleep(50 * time.Millisecond)
				c.Close()
			}},
	}
}

// TestHostileBackend runs every case against its own gateway, in parallel.
func TestHostileBackend(t *testing.T) {
	for _, tc := range hostileBackendCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runHostileBackendCase(t, tc)
		})
	}
}

var hbNonSlug = regexp.MustCompile(`[^a-z0-9]+`)

func runHostileBackendCase(t *testing.T, tc hbCase) {
	id := strings.Trim(hbNonSlug.ReplaceAllString(strings.ToLower(tc.name), "-"), "-")
	marker := func(who string) string { return "hbmark-" + id + "-" + who }
	bad := startRawBackend(t, "bad", rbEcho)
	good := startRawBackend(t, "good", rbEcho)
	doc := newRouting().rawAccount("bad", bad).rawAccount("good", good).
		target("chat", "bad", "hostile", 1).target("chat", "good", "healthy", 2)
	doc.Timeouts = map[string]any{"firstByte": "2s", "connect": "2s", "streamIdle": "5s"}
	gw := startGateway(t, doc.rawEnv(map[string]*rawBackend{"bad": bad, "good": good}), bad.Key, good.Key)

	first := marker("first")
	if tc.idle != nil {
		res := hbCall(gw.URL, first, tc.stream)
		if got, why := hbClassify(res, first); got != hbHostileOwn {
			t.Fatalf("first request, before anything went wrong: %s; want the hostile target's own answer", why)
		}
		if bad.SendIdle("sent unsolicited bytes while idle", tc.idle(first+"-stray")) == 0 {
			t.Fatalf("the gateway kept no connection to the backend to send on")
		}
		time.Sleep(300 * time.Millisecond) // what the gateway does with the bytes, it does now
	} else {
		bad.SetAnswer(tc.answer)
		res := hbCall(gw.URL, first, tc.stream)
		bad.SetAnswer(rbEcho)
		got, why := hbClassify(res, first)
		t.Logf("first request: %s: %s", got, why)
		if got&tc.accept == 0 {
			t.Errorf("first request: %s; want %s", why, tc.accept)
		}
		if res.took > 10*time.Second {
			t.Errorf("first request took %s; the header wait is 2s", res.took.Round(time.Millisecond))
		}
		if !hbReceived(bad, first) {
			t.Errorf("the hostile backend never received the first request: the case did not run")
		}
	}

	// Three callers in a row, each with its own marker: each gets its own answer, whole.
	for i := 1; i <= 3; i++ {
		m := marker("caller-" + strconv.Itoa(i))
		res := hbCall(gw.URL, m, tc.stream)
		got, why := hbClassify(res, m)
		want := hbFailover | hbHostileOwn
		if tc.idle != nil {
			// Nothing went wrong with any request: the stray bytes must cost no caller a
			// failover either, and each request must have been sent (not answered by the bytes).
			want = hbHostileOwn
		}
		if got&want == 0 || res.status != http.StatusOK {
			t.Errorf("caller %d after the misbehaviour: %s; want its own answer (%s)", i, why, want)
		}
		if tc.idle != nil && !hbReceived(bad, m) {
			t.Errorf("caller %d: its request never reached the hostile backend", i)
		}
	}

	// No request ever arrived on a connection after that connection misbehaved.
	misbehaved := 0
	for _, c := range bad.Conns() {
		if c.Misbehaved() != "" {
			misbehaved++
		}
	}
	if misbehaved == 0 && !tc.control {
		t.Errorf("no connection misbehaved: the case did not run")
	}
	for _, r := range bad.Requests() {
		if r.AfterMisbehaviour != "" {
			t.Errorf("request %q arrived on connection %d (its request #%d) after that connection %s: the connection was used again",
				r.Marker, r.Conn, r.Seq, r.AfterMisbehaviour)
		}
	}
	// And the gateway let go of every such connection: none stays in its pool.
	deadline := time.Now().Add(5 * time.Second)
	for _, c := range bad.Conns() {
		if c.Misbehaved() == "" {
			continue
		}
		for !c.Ended() && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if !c.Ended() {
			t.Errorf("connection %d still open 5s after it %s: the gateway kept it", c.Index, c.Misbehaved())
		}
	}
}

// received reports whether the backend received a request carrying marker.
func hbReceived(b *rawBackend, marker string) bool {
	for _, r := range b.Requests() {
		if r.Marker == marker {
			return true
		}
	}
	return false
}

// hbResult is what one caller received.
type hbResult struct {
	err     error // no answer at all
	status  int
	header  http.Header
	body    string
	bodyErr error // the answer's body broke off
	took    time.Duration
}

// hbCall sends one chat completion whose text is marker, as a caller of its own (its own
// connection), bounded so that a hang is a failure, not a stuck test.
func hbCall(url, marker string, stream bool) hbResult {
	body := `{"messages":[{"role":"user","content":"` + marker + `"}],"max_tokens":5`
	if stream {
		body += `,"stream":true`
	}
	body += "}"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/openai/deployments/chat/chat/completions?api-version=2024-10-21", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DisableCompression: true}}
	defer client.CloseIdleConnections()
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return hbResult{err: err, took: time.Since(start)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return hbResult{status: resp.StatusCode, header: resp.Header, body: string(b), bodyErr: err, took: time.Since(start)}
}

var hbMarkerPattern = regexp.MustCompile(`hbmark-[a-z0-9-]+`)

// classify says which outcome a caller's result is, and describes it.
func hbClassify(res hbResult, own string) (hbOutcome, string) {
	if res.err != nil {
		return 0, fmt.Sprintf("no answer after %s: %v", res.took.Round(time.Millisecond), res.err)
	}
	servedBy := res.header.Get("X-Served-By")
	desc := fmt.Sprintf("%d from %q after %s, body %q", res.status, servedBy, res.took.Round(time.Millisecond), hbClip(res.body, 160))
	// Never another caller's answer: every marker anywhere in the answer is the caller's own.
	var foreign []string
	for _, m := range hbMarkerPattern.FindAllString(res.body, -1) {
		if m != own {
			foreign = append(foreign, m)
		}
	}
	for k, vv := range res.header {
		for _, v := range vv {
			for _, m := range hbMarkerPattern.FindAllString(v, -1) {
				if m != own {
					foreign = append(foreign, k+": "+m)
				}
			}
		}
	}
	if len(foreign) > 0 {
		return 0, fmt.Sprintf("ANOTHER CALLER'S ANSWER (%s): %s", strings.Join(foreign, ", "), desc)
	}
	if res.bodyErr != nil {
		return 0, fmt.Sprintf("the answer broke off (%v): %s", res.bodyErr, desc)
	}
	if servedBy == "" {
		return 0, "no X-Served-By: " + desc
	}
	by := func(ok bool) hbOutcome {
		switch {
		case !ok:
			return 0
		case servedBy == hbHealthy:
			return hbFailover
		case servedBy == hbHostile:
			return hbHostileOwn
		}
		return 0
	}
	ct := res.header.Get("Content-Type")
	switch {
	case res.status == http.StatusOK && strings.HasPrefix(ct, "text/event-stream"):
		text, done, errEvent := hbReadEvents(res.body)
		if o := by(text == own && done && !errEvent); o != 0 {
			return o, desc
		}
		if servedBy == hbHostile && errEvent && !done {
			return hbInBandError, desc
		}
	case res.status == http.StatusOK:
		var c struct {
			Choices []struct {
				Message struct{ Content string } `json:"message"`
			} `json:"choices"`
		}
		if json.Unmarshal([]byte(res.body), &c) == nil && len(c.Choices) == 1 {
			if o := by(c.Choices[0].Message.Content == own); o != 0 {
				return o, desc
			}
		}
	case res.status == http.StatusNoContent || res.status == http.StatusNotModified:
		if servedBy == hbHostile && res.header.Get("X-Echo") == own && res.body == "" {
			return hbHostileOwn, desc
		}
	case res.status >= 400 && strings.HasPrefix(ct, "application/json"):
		var e struct {
			Error *struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if json.Unmarshal([]byte(res.body), &e) == nil && e.Error != nil && e.Error.Code != "" && e.Error.Message != "" {
			return hbCleanError, desc
		}
	}
	return 0, "not a whole answer of the caller's own nor a clean error: " + desc
}

// readEvents reads a stream's events: the text of its deltas, whether it ended with [DONE],
// and whether it holds an error event.
func hbReadEvents(body string) (text string, done, errEvent bool) {
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			done = true
			continue
		}
		var ev struct {
			Error   json.RawMessage `json:"error"`
			Choices []struct {
				Delta struct{ Content string } `json:"delta"`
			} `json:"choices"`
		}
		if json.Unmarshal([]byte(data), &ev) != nil {
			continue
		}
		if len(ev.Error) > 0 && string(ev.Error) != "null" {
			errEvent = true
		}
		for _, c := range ev.Choices {
			text += c.Delta.Content
		}
	}
	return text, done, errEvent
}

func hbClip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
