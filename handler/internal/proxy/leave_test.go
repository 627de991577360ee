package proxy

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aoai-failover/gateway/handler/internal/config"
	"github.com/aoai-failover/gateway/handler/internal/telemetry"
)

// lines keeps the request log lines a gateway writes.
type lines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lines) Emit(line *telemetry.Line) {
	l.mu.Lock()
	defer l.mu.Unlock()
	line.WriteTo(&l.buf)
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// TestCallerLeaving: a caller that leaves, before the answer or in the middle of a stream,
// cancels the backend call at once, is logged as 499, and counts against no target.
func TestCallerLeaving(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stream bool
	}{{"waiting for the answer", false}, {"mid-stream", true}} {
		t.Run(tc.name, func(t *testing.T) {
			cancelled := make(chan time.Time, 1)
			b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
				if tc.stream {
					w.Header().Set("Content-Type", "text/event-stream")
					io.WriteString(w, "data: {\"n\":1}\n\n")
					w.(http.Flusher).Flush()
				}
				select {
				case <-r.Context().Done():
					cancelled <- time.Now()
				case <-time.After(10 * time.Second):
				}
			})
			log := &lines{}
			tg := newGateway(t, func(r *config.Routing) { r.Timeouts.FirstByte = config.Duration(10 * time.Second) }, b)
			tg.gw.opt.RequestLog = log

			ctx, cancel := context.WithCancel(context.Background())
			body := `{}`
			if tc.stream {
				body = `{"stream":true}`
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, tg.srv.URL+chatPath, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			go func() {
				resp, err := http.DefaultClient.Do(req)
				if err == nil {
					bufio.NewReader(resp.Body).ReadString('\n') // the first event
					resp.Body.Close()
				}
			}()
			time.Sleep(300 * time.Millisecond)
			left := time.Now()
			cancel()
			select {
			case at := <-cancelled:
				if d := at.Sub(left); d > 100*time.Millisecond {
					t.Errorf("the backend call was cancelled %v after the caller left", d)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the backend call was not cancelled")
			}
			tg.settle()
			if got := log.String(); !strings.Contains(got, `"status":499`) {
				t.Errorf("log line %s", got)
			}
			for _, s := range tg.view.Snapshot(time.Now()) {
				if s.State != "available" || s.ConsecutiveFailures != 0 {
					t.Errorf("target %s is %s with %d failures after a caller left", s.Target, s.State, s.ConsecutiveFailures)
				}
			}
		})
	}
}
