package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// rawBackend is a fake Azure OpenAI account that speaks HTTP/1.1 by hand on raw TCP, so that it
// can misbehave in ways an http.Server never would. It reads each request with net/http's
// parser, answers it by writing whatever bytes its current answer function writes, and records
// every request with the connection it came on. It can also write to connections that are idle.
type rawBackend struct {
	URL  string
	Key  string
	ln   net.Listener
	quit chan struct{}
	wg   sync.WaitGroup

	mu     sync.Mutex
	answer rbAnswer
	conns  []*rbConn
	reqs   []*rbRequest
}

// rbAnswer answers one request by writing to its connection.
type rbAnswer func(c *rbConn, r *rbRequest)

// rbRequest is one request as the backend received it.
type rbRequest struct {
	Conn   int // index of the connection it came on, in the order they were accepted
	Seq    int // its place among that connection's requests, from 0
	Method string
	Target string
	Header http.Header
	Body   []byte
	Marker string // messages[0].content of the body: which caller sent it
	Stream bool   // the body asks for a stream
	// AfterMisbehaviour is what the connection had already done wrong when this request
	// arrived on it; empty when it had done nothing wrong.
	AfterMisbehaviour string
}

// rbConn is one accepted connection.
type rbConn struct {
	Index int
	b     *rawBackend
	nc    net.Conn
	wmu   sync.Mutex // serialises writes: an answer and a write on the idle connection

	mu         sync.Mutex
	misbehaved string // what it did wrong first; empty while it behaved
	ended      bool   // the connection is closed (by the gateway, by the backend, or at cleanup)
}

// startRawBackend listens on 127.0.0.1:0 and answers every request with answer until
// SetAnswer changes it. Everything is closed at the test's cleanup.
func startRawBackend(t testing.TB, name string, answer rbAnswer) *rawBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &rawBackend{URL: "http://" + ln.Addr().String(), Key: "raw-key-" + name + "-7c41a9", ln: ln, quit: make(chan struct{}), answer: answer}
	b.wg.Add(1)
	go b.accept()
	t.Cleanup(func() {
		close(b.quit)
		ln.Close()
		b.mu.Lock()
		for _, c := range b.conns {
			c.nc.Close()
		}
		b.mu.Unlock()
		done := make(chan struct{})
		go func() { b.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Errorf("raw backend %s: connections still being served 5s after cleanup", name)
		}
	})
	return b
}

func (b *rawBackend) accept() {
	defer b.wg.Done()
	for {
		nc, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		c := &rbConn{Index: len(b.conns), b: b, nc: nc}
		b.conns = append(b.conns, c)
		b.wg.Add(1)
		b.mu.Unlock()
		go b.serve(c)
	}
}

func (b *rawBackend) serve(c *rbConn) {
	defer b.wg.Done()
	defer c.end()
	br := bufio.NewReader(c.nc)
	for seq := 0; ; seq++ {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, err := io.ReadAll(io.LimitReader(req.Body, 4<<20))
		if err != nil {
			return
		}
		r := &rbRequest{Conn: c.Index, Seq: seq, Method: req.Method, Target: req.RequestURI, Header: req.Header, Body: body}
		var parsed struct {
			Messages []struct {
				Content string `json:"content"`
			} `json:"messages"`
			Stream bool `json:"stream"`
		}
		if json.Unmarshal(body, &parsed) == nil && len(parsed.Messages) > 0 {
			r.Marker, r.Stream = parsed.Messages[0].Content, parsed.Stream
		}
		c.mu.Lock()
		r.AfterMisbehaviour = c.misbehaved
		c.mu.Unlock()
		b.mu.Lock()
		b.reqs = append(b.reqs, r)
		answer := b.answer
		b.mu.Unlock()
		answer(c, r)
	}
}

// SetAnswer changes how the next requests are answered.
func (b *rawBackend) SetAnswer(a rbAnswer) {
	b.mu.Lock()
	b.answer = a
	b.mu.Unlock()
}

// Requests returns every request received so far, in the order they arrived.
func (b *rawBackend) Requests() []*rbRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*rbRequest(nil), b.reqs...)
}

// Conns returns every connection accepted so far.
func (b *rawBackend) Conns() []*rbConn {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*rbConn(nil), b.conns...)
}

// SendIdle writes s on every connection still open (the caller makes sure none has a request
// in flight), marking each as having misbehaved with what. It returns how many it wrote to.
func (b *rawBackend) SendIdle(what, s string) int {
	n := 0
	for _, c := range b.Conns() {
		if c.Ended() {
			continue
		}
		c.Misbehave(what)
		if c.Write(s) == nil {
			n++
		}
	}
	return n
}

// Write sends s on the connection (bounded: a peer that stops reading fails it after 10s).
func (c *rbConn) Write(s string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := io.WriteString(c.nc, s)
	return err
}

// Drip sends s one byte every interval, then one more filler byte every interval, forever:
// until a write fails (the gateway closed the connection) or the backend is closed.
func (c *rbConn) Drip(s string, filler byte, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for i := 0; ; i++ {
		b := filler
		if i < len(s) {
			b = s[i]
		}
		if c.Write(string([]byte{b})) != nil {
			return
		}
		select {
		case <-c.b.quit:
			return
		case <-tick.C:
		}
	}
}

// Misbehave marks the connection as one that must never carry another request.
func (c *rbConn) Misbehave(what string) {
	c.mu.Lock()
	if c.misbehaved == "" {
		c.misbehaved = what
	}
	c.mu.Unlock()
}

// Misbehaved is what the connection did wrong first, or "".
func (c *rbConn) Misbehaved() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.misbehaved
}

// Close closes the connection from the backend's side.
func (c *rbConn) Close() { c.nc.Close() }

// Ended reports whether the connection is closed: the backend's reader saw its end.
func (c *rbConn) Ended() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ended
}

func (c *rbConn) end() {
	c.mu.Lock()
	c.ended = true
	c.mu.Unlock()
	c.nc.Close()
}

// rbEcho answers well: a chat completion (or a stream of one, as the request asks) whose
// text is the request's marker, also echoed in an X-Echo header. The connection is kept.
func rbEcho(c *rbConn, r *rbRequest) {
	if r.Stream {
		_ = c.Write(rbStream(r.Marker))
	} else {
		_ = c.Write(rbPlain(r.Marker))
	}
}

// rbCompletion is a chat.completion body whose message is text.
func rbCompletion(text string) string {
	b, _ := json.Marshal(map[string]any{
		"id": "chatcmpl-raw", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o-mini",
		"choices": []any{map[string]any{"index": 0, "message": map[string]any{"role": "assistant", "content": text}, "finish_reason": "stop"}},
		"usage":   map[string]any{"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
	})
	return string(b)
}

// rbPlain is a whole well-framed 200 answer whose text is marker.
func rbPlain(marker string) string {
	body := rbCompletion(marker)
	return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Echo: " + marker +
		"\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
}

// rbEvents are the server-sent events of a streamed chat completion whose text is marker.
func rbEvents(marker string) []string {
	ev := func(delta map[string]any, finish any) string {
		b, _ := json.Marshal(map[string]any{
			"id": "chatcmpl-raw", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-4o-mini",
			"choices": []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finish}},
		})
		return "data: " + string(b) + "\n\n"
	}
	return []string{
		ev(map[string]any{"role": "assistant", "content": ""}, nil),
		ev(map[string]any{"content": marker}, nil),
		ev(map[string]any{}, "stop"),
		"data: [DONE]\n\n",
	}
}

// chunk is s as one chunk of a chunked body.
func rbChunk(s string) string { return fmt.Sprintf("%x\r\n%s\r\n", len(s), s) }

// rbStreamHead is the head of a chunked event stream answer.
func rbStreamHead(marker string) string {
	return "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nX-Echo: " + marker + "\r\nTransfer-Encoding: chunked\r\n\r\n"
}

// rbStream is a whole well-framed streamed answer whose text is marker.
func rbStream(marker string) string {
	var s strings.Builder
	s.WriteString(rbStreamHead(marker))
	for _, ev := range rbEvents(marker) {
		s.WriteString(rbChunk(ev))
	}
	s.WriteString("0\r\n\r\n")
	return s.String()
}

// rawAccount adds an account whose endpoint is a raw backend; its key is in KEY_<NAME>.
func (d *routingDoc) rawAccount(name string, b *rawBackend) *routingDoc {
	d.Accounts[name] = map[string]any{"endpoint": b.URL, "region": name, "auth": map[string]any{"keyEnv": "KEY_" + strings.ToUpper(name)}}
	return d
}

// rawEnv is the gateway's environment for a routing document over raw backends.
func (d *routingDoc) rawEnv(backends map[string]*rawBackend) map[string]string {
	env := d.env(nil)
	for name, b := range backends {
		env["KEY_"+strings.ToUpper(name)] = b.Key
	}
	return env
}
