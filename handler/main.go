// Command handler is the Azure OpenAI failover gateway, run by the Azure Functions host as a
// custom handler (or on its own, in a container or VM). `handler -h` says how to use it; the
// command line, `-check` and the gateway itself are in internal/app (app.Main).
package main

import (
	"context"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/aoai-failover/gateway/handler/internal/app"
)

func main() {
	if os.Getenv("GOGC") == "" {
		// The live heap is a few MiB, so at the default GOGC (100) the collector runs every
		// few MiB of garbage, many times a second under load, and each cycle has a fixed cost
		// (scanning every connection's goroutine stack). 200 halves the cycles for a few MiB
		// more memory: about 10% less CPU per request in the benchmark. GOGC, if set, stands.
		debug.SetGCPercent(200)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	code := app.Main(ctx, os.Args[1:], app.Env{Getenv: os.Getenv, Stdout: os.Stdout, Stderr: os.Stderr})
	stop()
	os.Exit(code)
}
