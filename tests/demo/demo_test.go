package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// TestDemo runs the README's first command (shortened) and checks that it shows failover: the
// throttled primary, the failing region's circuit, and every request answered.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the demo")
	}
	_, file, _, _ := runtime.Caller(0)
	// The README's command as it is (its default burst of 80 requests), on a free port.
	cmd := exec.Command("go", "run", ".", "-port", "0", "-exit")
	cmd.Dir = filepath.Dir(file)
	cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir()) // the run's log file goes there
	out, err := cmd.CombinedOutput()
	s := string(out)
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, s)
	}
	for _, want := range []string{
		"swc/micro throttled (429)",
		"uks/gpt-4o-mini failing (HTTP 503): circuit open",
		"swc/micro deprioritised: its last answer said no requests are left in this 10 s window",
		"Summary: 80 requests, 80 complete answers, 0 errors",
		"served by frc/gpt-4o-mini",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("demo output lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "already over") {
		t.Errorf("an event line contradicts itself:\n%s", s)
	}
	// The failing region is tried only until its circuit opens, not once per request.
	m := regexp.MustCompile(`uks/gpt-4o-mini\s+served\s+0\s+answered 429\s+0 times, failed\s+(\d+) times`).FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("no summary line for the failing region:\n%s", s)
	}
	// Three failures open the circuit; requests already on their way to it (4 at a time) may
	// add a few more, and each cool-down (about 10 s of the 25 s burst) lets one probe through,
	// but not one request in two, as without a circuit.
	if n, _ := strconv.Atoi(m[1]); n < 3 || n > 12 {
		t.Errorf("the failing region was tried %d times in 80 requests; the circuit should stop it after 3", n)
	}
	checkLog(t, s)
}

// checkLog: the run printed its own log file, and the gateway wrote to it.
func checkLog(t *testing.T, out string) {
	t.Helper()
	m := regexp.MustCompile(`Its log: (\S+aoai-gateway-demo-\d+\.log)\n`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no log file named:\n%s", out)
	}
	b, err := os.ReadFile(m[1])
	if err != nil || !strings.Contains(string(b), `"msg":"gateway listening"`) {
		t.Errorf("log %s: %v\n%s", m[1], err, b)
	}
}

// syncBuilder collects output from one goroutine while another reads it.
type syncBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuilder) add(text string) { s.mu.Lock(); s.b.WriteString(text); s.mu.Unlock() }

func (s *syncBuilder) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }
