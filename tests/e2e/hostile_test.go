package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aoai-failover/gateway/tests/aoaisim"
)

// openSockets counts the process's open sockets.
func openSockets(t *testing.T, pid int) int {
	t.Helper()
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); err == nil && strings.HasPrefix(link, "socket:") {
			n++
		}
	}
	return n
}

func goroutines(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s struct {
		Runtime struct{ Goroutines int } `json:"runtime"`
	}
	json.NewDecoder(resp.Body).Decode(&s)
	return s.Runtime.Goroutines
}

// TestHostileClients: slow-loris headers, oversized bodies and headers, chunked bodies that
// never end, invalid UTF-8 and JSON bombs, thousands of query parameters, and clients that
// leave mid-request and mid-stream. Afterwards the process is alive, its goroutines and open
// sockets are back to their baseline, and a normal request succeeds.
func TestHostileClients(t *testing.T) {
	swc := startRegion(t, "swc", map[string]aoaisim.Deployment{
		"micro": {Model: "m"},
		"slow":  {Model: "m", PerToken: aoaisim.Duration(100 * time.Millisecond), CompletionTokens: 50},
	})
	regions := map[string]*region{"swc": swc}
	doc := newRouting().account("swc", swc).target("chat", "swc", "micro", 1).target("slow", "swc", "slow", 1)
	doc.Limits = map[string]any{"maxRequestBodyBytes": 1 << 20}
	doc.Timeouts = map[string]any{"requestBody": "2s"}
	gw := startGateway(t, doc.env(regions), doc.secrets(regions)...)
	addr := strings.TrimPrefix(gw.URL, "http://")
	pid := gw.cmd.Process.Pid

	if resp, _ := chat(t, gw.URL, "chat", smallChat); resp.StatusCode != 200 { // warm the backend connection
		t.Fatal("warm-up failed")
	}
	time.Sleep(200 * time.Millisecond)
	baseG, baseS := goroutines(t, gw.URL), openSockets(t, pid)

	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Error(err)
			return nil
		}
		return c
	}
	statusOf := func(c net.Conn) int {
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	var wg sync.WaitGroup
	run := func(name string, want int, f func() int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got := f(); got != want {
				t.Errorf("%s: got %d, want %d", name, got, want)
			}
		}()
	}
	const path = "/openai/deployments/chat/chat/completions?api-version=2024-10-21"
	for i := 0; i < 10; i++ {
		run("slow-loris headers", 0, func() int { // the server drops it after its header timeout
			c := dial()
			defer c.Close()
			fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\n", path)
			for j := 0; j < 15; j++ {
				if _, err := fmt.Fprintf(c, "X-Slow-%d: 1\r\n", j); err != nil {
					return 0
				}
				time.Sleep(time.Second)
			}
			return statusOf(c)
		})
	}
	run("oversized headers", 431, func() int {
		c := dial()
		defer c.Close()
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\nContent-Length: 2\r\n\r\n{}", path, strings.Repeat("a", 200<<10))
		return statusOf(c)
	})
	run("oversized body", 413, func() int {
		resp, err := http.Post(gw.URL+path, "application/json", strings.NewReader(`{"x":"`+strings.Repeat("a", 2<<20)+`"}`))
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	})
	run("chunked body that never ends", 408, func() int {
		c := dial()
		defer c.Close()
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n", path)
		go func() {
			for j := 0; j < 8; j++ {
				if _, err := fmt.Fprintf(c, "1\r\n \r\n"); err != nil {
					return
				}
				time.Sleep(500 * time.Millisecond)
			}
		}()
		return statusOf(c)
	})
	run("invalid UTF-8 body", 400, func() int {
		resp, err := http.Post(gw.URL+"/openai/v1/chat/completions", "application/json", strings.NewReader("{\"model\":\"chat\",\"x\":\"\xff\xfe\"}"))
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	})
	run("JSON bomb", 400, func() int {
		resp, err := http.Post(gw.URL+"/openai/v1/chat/completions", "application/json", strings.NewReader(`{"model":"chat","x":`+strings.Repeat("[", 500000)))
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	})
	run("thousands of query parameters", 200, func() int {
		var q strings.Builder
		for j := 0; j < 3000; j++ {
			fmt.Fprintf(&q, "&p%d=%d", j, j)
		}
		resp, err := http.Post(gw.URL+path+q.String(), "application/json", strings.NewReader(smallChat))
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	})
	for i := 0; i < 10; i++ {
		run("leaves mid-request", 0, func() int {
			c := dial()
			fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"messages\":", path)
			time.Sleep(100 * time.Millisecond)
			c.Close()
			return 0
		})
		run("leaves mid-stream", 200, func() int {
			resp, err := http.Post(gw.URL+"/openai/deployments/slow/chat/completions?api-version=1", "application/json",
				strings.NewReader(`{"messages":[{"role":"user","content":"hi"}],"stream":true}`))
			if err != nil {
				return 0
			}
			bufio.NewReader(resp.Body).ReadString('\n')
			resp.Body.Close() // mid-stream: the gateway must cancel the upstream call
			return resp.StatusCode
		})
	}
	wg.Wait()

	waitFor(t, "goroutines and sockets back to their baseline", 20*time.Second, func() bool {
		return goroutines(t, gw.URL) <= baseG+3 && openSockets(t, pid) <= baseS+2
	})
	if resp, text := chat(t, gw.URL, "chat", smallChat); resp.StatusCode != 200 {
		t.Fatalf("normal request after the hostile clients: %d %s", resp.StatusCode, text)
	}
	if st := swc.Sim.Stats()["slow"]; st.Served != 0 {
		t.Errorf("streams whose callers left were finished anyway: %+v", st)
	}
}
