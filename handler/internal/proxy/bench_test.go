package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkForward measures one non-streaming and one streaming request through the forwarder
// against a local backend, for allocation and CPU profiles (go test -bench Forward -benchmem).
func BenchmarkForward(b *testing.B) {
	events := strings.Repeat("data: {\"choices\":[{\"delta\":{\"content\":\"word \"}}]}\n\n", 20) + "data: [DONE]\n\n"
	backendSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if strings.Contains(string(body), `"stream":true`) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, events)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, okBody)
	}))
	defer backendSrv.Close()
	tg := newGateway(b, nil, &backend{srv: backendSrv})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	for _, tc := range []struct{ name, body string }{
		{"plain", `{"messages":[{"role":"user","content":"hello there"}],"max_tokens":20}`},
		{"stream", `{"messages":[{"role":"user","content":"hello there"}],"max_tokens":20,"stream":true}`},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := client.Post(tg.srv.URL+chatPath, "application/json", strings.NewReader(tc.body))
					if err != nil {
						b.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Fatalf("status %d", resp.StatusCode)
					}
				}
			})
		})
	}
}
