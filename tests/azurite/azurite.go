// Package azurite starts Azurite's Table service for tests: the real emulator from npm, on a
// free loopback port, in memory, stopped when the test ends.
package azurite

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/aoai-failover/gateway/tests/testio"
)

// AccountKey is Azurite's documented development key; it is public, not a secret.
const AccountKey = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

// Table is a running Azurite Table service.
type Table struct {
	// ConnectionString reaches it with the development account.
	ConnectionString string
	// ServiceURI is the table endpoint, for identity-based connections.
	ServiceURI string
	Port       string
	cmd        *exec.Cmd
	path, dir  string
	args       []string
}

func bin() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "node", "node_modules", ".bin", "azurite-table")
}

// Start runs Azurite for the test. Without it installed (tests/run installs it), the test fails
// under CI and is skipped elsewhere.
func Start(t testing.TB) *Table { return start(t, "", "") }

// StartOAuth runs Azurite over HTTPS with the given certificate, accepting Entra ID bearer
// tokens (Azurite checks their issuer, audience and lifetime, not their signature).
// ServiceURI is then the identity-based endpoint.
func StartOAuth(t testing.TB, certFile, keyFile string) *Table { return start(t, certFile, keyFile) }

func start(t testing.TB, certFile, keyFile string) *Table {
	t.Helper()
	path := bin()
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("Azurite is not installed (tests/run installs it with npm ci in tests/node): %v", err)
		}
		t.Skip("needs Azurite: run `npm ci` in tests/node (tests/run does)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	args := []string{"--tableHost", "127.0.0.1", "--tablePort", port, "--inMemoryPersistence",
		"--skipApiVersionCheck", "--disableTelemetry", "--silent"}
	scheme := "http"
	if certFile != "" {
		args = append(args, "--cert", certFile, "--key", keyFile, "--oauth", "basic")
		scheme = "https"
	}
	tb := &Table{Port: port, path: path, args: args, dir: t.TempDir(),
		ServiceURI: fmt.Sprintf("%s://127.0.0.1:%s/devstoreaccount1", scheme, port),
		ConnectionString: fmt.Sprintf("DefaultEndpointsProtocol=%s;AccountName=devstoreaccount1;AccountKey=%s;TableEndpoint=%s://127.0.0.1:%s/devstoreaccount1;",
			scheme, AccountKey, scheme, port)}
	t.Cleanup(tb.Stop)
	tb.spawn(t)
	return tb
}

// spawn starts the process and waits until it listens.
func (tb *Table) spawn(t testing.TB) {
	t.Helper()
	cmd := exec.Command(tb.path, tb.args...)
	cmd.Dir = tb.dir
	var out testio.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start Azurite: %v", err)
	}
	tb.cmd = cmd
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+tb.Port, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Azurite did not listen on %s within 30s: %s", tb.Port, out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Restart stops Azurite and starts a fresh one, empty, on the same port.
func (tb *Table) Restart(t testing.TB) {
	t.Helper()
	tb.Stop()
	tb.spawn(t)
}

// Stop ends Azurite (and its children); later calls do nothing.
func (tb *Table) Stop() {
	if tb.cmd == nil || tb.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-tb.cmd.Process.Pid, syscall.SIGKILL)
	_ = tb.cmd.Wait()
	tb.cmd = nil
}

// Pause freezes Azurite (SIGSTOP) to simulate an outage: connections hang, nothing answers.
func (tb *Table) Pause() { _ = syscall.Kill(-tb.cmd.Process.Pid, syscall.SIGSTOP) }

// Resume continues a paused Azurite.
func (tb *Table) Resume() { _ = syscall.Kill(-tb.cmd.Process.Pid, syscall.SIGCONT) }
