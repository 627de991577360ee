//go:build !race

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aoai-failover/gateway/tests/aoaisim"
)

// TestLoadAndFaults: 2,000 concurrent streaming requests for a fixed time through two gateway
// instances, with one region throttling and another failing part of the time. Every request
// gets a complete answer or a clean Azure-shaped error, none hangs, none is lost, and memory
// stays bounded. (Without -race: the race detector would measure itself.) tests/run runs it.
func TestLoadAndFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("load run")
	}
	const clients, runFor = 2000, 15 * time.Second
	tight := startRegion(t, "tight", map[string]aoaisim.Deployment{"a": {Model: "m", TPM: 20000, RPM: 6000, PerToken: aoaisim.Duration(5 * time.Millisecond)}})
	flaky := startRegion(t, "flaky", map[string]aoaisim.Deployment{"b": {Model: "m", PerToken: aoaisim.Duration(5 * time.Millisecond)}})
	solid := startRegion(t, "solid", map[string]aoaisim.Deployment{"c": {Model: "m", PerToken: aoaisim.Duration(5 * time.Millisecond)}})
	regions := map[string]*region{"tight": tight, "flaky": flaky, "solid": solid}
	doc := newRouting().account("tight", tight).account("flaky", flaky).account("solid", solid).
		target("chat", "tight", "a", 1).target("chat", "flaky", "b", 2).target("chat", "solid", "c", 3)
	doc.Timeouts = map[string]any{"request": "30s"}
	gws := []*gatewayProc{startGateway(t, doc.env(regions), doc.secrets(regions)...), startGateway(t, doc.env(regions), doc.secrets(regions)...)}

	ctx, stop := context.WithTimeout(context.Background(), runFor)
	defer stop()
	go func() { // the flaky region fails half of the time, in 2-second spells
		for i := 0; ctx.Err() == nil; i++ {
			flaky.Sim.SetFault("b", map[bool]string{true: "503", false: ""}[i%2 == 0])
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Second):
			}
		}
	}()

	client := &http.Client{Timeout: 45 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: 0}}
	var sent, complete, cleanErrors, bad atomic.Int64
	var badMu sync.Mutex
	var badSamples []string
	record := func(s string) {
		bad.Add(1)
		badMu.Lock()
		if len(badSamples) < 5 {
			badSamples = append(badSamples, s)
		}
		badMu.Unlock()
	}
	body := []byte(`{"messages":[{"role":"user","content":"Stream a short answer."}],"max_tokens":20,"stream":true}`)
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			url := gws[i%2].URL + "/openai/deployments/chat/chat/completions?api-version=2024-10-21"
			for ctx.Err() == nil {
				sent.Add(1)
				resp, err := client.Post(url, "application/json", bytes.NewReader(body))
				if err != nil {
					record("transport: " + err.Error())
					continue
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case err != nil:
					record("read: " + err.Error())
				case resp.StatusCode == 200 && bytes.HasSuffix(b, []byte("data: [DONE]\n\n")):
					complete.Add(1)
				case resp.StatusCode == 200 && bytes.Contains(b, []byte(`"StreamInterrupted"`)):
					cleanErrors.Add(1)
				case resp.StatusCode != 200 && isAzureError(b):
					cleanErrors.Add(1)
				default:
					record(fmt.Sprintf("status %d, body %.200q", resp.StatusCode, b))
				}
			}
		}(i)
	}
	var peak [2]float64
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(runFor + 60*time.Second):
		t.Fatalf("requests still hanging %s after the run ended", 60*time.Second)
	}
	for i, g := range gws {
		peak[i] = vmHWM(g.cmd.Process.Pid)
	}
	answered := complete.Load() + cleanErrors.Load()
	t.Logf("%d clients for %s through 2 instances: %d sent, %d complete streams, %d clean errors, %d bad; primary 429s %d, flaky region faults %d; peak RSS %.0f / %.0f MiB",
		clients, runFor, sent.Load(), complete.Load(), cleanErrors.Load(), bad.Load(),
		tight.Sim.Stats()["a"].Throttled, flaky.Sim.Stats()["b"].Faulted, peak[0], peak[1])
	if bad.Load() != 0 || answered != sent.Load() {
		t.Errorf("%d of %d requests were lost or broken, e.g. %v", sent.Load()-answered, sent.Load(), badSamples)
	}
	if complete.Load() < sent.Load()*9/10 {
		t.Errorf("only %d of %d streams complete with a healthy region available", complete.Load(), sent.Load())
	}
	for i, p := range peak {
		if p > 400 {
			t.Errorf("instance %d peaked at %.0f MiB", i, p)
		}
	}
}

func isAzureError(b []byte) bool {
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	return json.Unmarshal(b, &e) == nil && e.Error.Code != "" && e.Error.Message != ""
}

func vmHWM(pid int) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			var kb float64
			fmt.Sscanf(strings.TrimSpace(v), "%f", &kb)
			return kb / 1024
		}
	}
	return 0
}
