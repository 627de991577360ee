package e2e

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkColdStart starts the handler as the Functions host does, with its backend key in the
// (fake, TLS) Key Vault read through the (fake) managed identity endpoint, and measures the time
// from the process's start to answering GET / (what the host waits for) and to serving its first
// chat completion; it also reports the size of the binary as deployed.
//
//	go test -run '^$' -bench ColdStart -benchtime 20x ./tests/e2e
func BenchmarkColdStart(b *testing.B) {
	v := newVaultSetup(b)
	var toRoot, toServed []time.Duration
	for i := 0; i < b.N; i++ {
		port := freePort(b)
		cmd := exec.Command(handlerBin)
		cmd.Dir = b.TempDir()
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "FUNCTIONS_CUSTOMHANDLER_PORT=" + port, "HOME=" + os.Getenv("HOME")}
		for k, val := range v.env {
			cmd.Env = append(cmd.Env, k+"="+val)
		}
		url := "http://127.0.0.1:" + port
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		start := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		root := poll(b, start, func() bool {
			resp, err := client.Get(url + "/")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		})
		served := poll(b, start, func() bool {
			req, _ := http.NewRequest(http.MethodPost, url+"/openai/deployments/chat/chat/completions?api-version=2024-10-21", strings.NewReader(smallChat))
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		})
		toRoot, toServed = append(toRoot, root), append(toServed, served)
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			b.Fatalf("handler exit: %v", err)
		}
	}
	b.ReportMetric(ms(median(toRoot)), "ms-to-GET/")
	b.ReportMetric(ms(median(toServed)), "ms-to-first-completion")
	b.ReportMetric(0, "ns/op") // the per-op time is not the figure here

	// The binary as infra/pack builds it for deployment (stripped, static).
	bin := filepath.Join(b.TempDir(), "handler")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./handler")
	build.Dir, build.Env = repoRoot(), append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	if info, err := os.Stat(bin); err == nil {
		b.ReportMetric(float64(info.Size())/(1<<20), "MiB-binary")
	}
}

// poll calls ok every millisecond until it is true and returns the time since start.
func poll(b *testing.B, start time.Time, ok func() bool) time.Duration {
	for !ok() {
		if time.Since(start) > 15*time.Second {
			b.Fatal("not ready after 15 s")
		}
		time.Sleep(time.Millisecond)
	}
	return time.Since(start)
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
