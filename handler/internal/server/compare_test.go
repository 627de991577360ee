package server

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The caller side keeps its own server rather than net/http's for the reason these two show:
// net/http's server takes a request with both Content-Length and Transfer-Encoding by its
// chunked framing and keeps the connection, so a request smuggled behind it is answered; this
// server refuses the request and ends the connection. BenchmarkServers measures the cost side.

const smuggle = "POST /first HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" +
	"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"

// answers sends raw on a new connection to addr and returns up to two answers, status and body.
func answers(t *testing.T, addr, raw string) []string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	io.WriteString(c, raw)
	br := bufio.NewReader(c)
	var got []string
	for len(got) < 2 {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return got
		}
		b, _ := io.ReadAll(resp.Body)
		got = append(got, resp.Status+" "+string(b))
	}
	return got
}

var echoPath = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	io.WriteString(w, r.URL.Path)
})

func TestSmuggledRequestRefusedHereAnsweredByNetHTTP(t *testing.T) {
	ours := start(t, &Server{Handler: echoPath})
	got := answers(t, ours.addr, smuggle)
	if len(got) != 1 || !strings.HasPrefix(got[0], "400") {
		t.Errorf("this server: %q, want one 400 and the connection closed", got)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	std := &http.Server{Handler: echoPath}
	go std.Serve(ln)
	t.Cleanup(func() { std.Close() })
	got = answers(t, ln.Addr().String(), smuggle)
	t.Logf("net/http's server answers %q", got)
	if len(got) != 2 || !strings.HasSuffix(got[1], "/smuggled") {
		t.Logf("net/http no longer answers the smuggled request: the reason for keeping this server is worth checking again")
	}
}

// BenchmarkServers: one keep-alive client, one request at a time, a small answer; this server
// and net/http's side by side in one run (compare the ratio, not the absolute times).
//
//	go test -run '^$' -bench BenchmarkServers -benchmem ./handler/internal/server/
func BenchmarkServers(b *testing.B) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"chatcmpl-1","choices":[{"message":{"content":"hi"}}]}`)
	})
	run := func(b *testing.B, addr string) {
		tr := &http.Transport{MaxIdleConnsPerHost: 1}
		defer tr.CloseIdleConnections()
		body := `{"messages":[{"role":"user","content":"hi"}]}`
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/openai/deployments/chat/chat/completions", strings.NewReader(body))
			resp, err := tr.RoundTrip(req)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	b.Run("own", func(b *testing.B) {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		s := &Server{Handler: ok}
		go s.Serve(ln)
		defer s.Close()
		run(b, ln.Addr().String())
	})
	b.Run("net-http", func(b *testing.B) {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		s := &http.Server{Handler: ok}
		go s.Serve(ln)
		defer s.Close()
		run(b, ln.Addr().String())
	})
}
