//go:build unix

package main

import (
	"bufio"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestDemoCtrlC types Ctrl-C, as a person would, into a terminal (a pseudo-terminal that
// script(1) sets up) running the README's `go run`, while the demo waits for curl: the summary
// is printed again, the gateway stops, and go run exits 0. Before that, the gateway listened on
// 127.0.0.1 only, as the demo said.
func TestDemoCtrlC(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the demo")
	}
	script, err := exec.LookPath("script")
	if err != nil {
		t.Skip("needs script(1), from util-linux, for a terminal")
	}
	_, file, _, _ := runtime.Caller(0)
	// -e: script exits with the status of the command it ran, here go run's.
	cmd := exec.Command(script, "-qefc", "go run . -port 0 -requests 2 -concurrency 1", "/dev/null")
	cmd.Dir = filepath.Dir(file)
	cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir(), "TERM=dumb") // dumb: plain lines, no redrawing
	keys, _ := cmd.StdinPipe()
	defer keys.Close()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var mu syncBuilder
	ready, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		lines := bufio.NewScanner(stdout)
		for lines.Scan() {
			line := strings.TrimRight(lines.Text(), "\r")
			mu.add(line + "\n")
			if line == "Ctrl-C to stop." {
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-done:
		t.Fatalf("the demo ended before waiting for Ctrl-C:\n%s", mu.String())
	case <-time.After(3 * time.Minute):
		t.Fatalf("the demo never got to wait for Ctrl-C:\n%s", mu.String())
	}
	addr := regexp.MustCompile(`listening on (127\.0\.0\.1:\d+), this machine only`).FindStringSubmatch(mu.String())
	if addr == nil {
		t.Fatalf("the demo does not say it listens on 127.0.0.1 only:\n%s", mu.String())
	}
	if c, err := net.Dial("tcp", addr[1]); err != nil {
		t.Fatalf("nothing listens on %s: %v", addr[1], err)
	} else {
		c.Close()
	}
	io.WriteString(keys, "\x03") // Ctrl-C: the terminal interrupts its foreground process group
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatalf("the demo did not stop on Ctrl-C:\n%s", mu.String())
	}
	err = cmd.Wait()
	s := mu.String()
	if err != nil {
		t.Fatalf("go run exited with %v after Ctrl-C:\n%s", err, s)
	}
	if !strings.Contains(s, "Ctrl-C: stopping the gateway.") || strings.Count(s, "Summary: 2 requests, 2 complete answers, 0 errors") != 2 {
		t.Errorf("no summary after Ctrl-C:\n%s", s)
	}
	if c, err := net.Dial("tcp", addr[1]); err == nil {
		c.Close()
		t.Errorf("the gateway still listens on %s after the demo exited", addr[1])
	}
	checkLog(t, s)
}
