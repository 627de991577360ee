// Command handler is the Azure OpenAI failover gateway, run by the Azure Functions host as a
// custom handler (or on its own, in a container or VM).
package main

import (
	"context"
	"fmt"
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
	// `handler -check` validates the settings in the environment and exits, contacting nothing:
	// for a deploy script or a template test, before the settings reach a Function App.
	if len(os.Args) == 2 && os.Args[1] == "-check" {
		if err := app.Check(os.Getenv, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "handler:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	err := app.Run(ctx, app.Env{Getenv: os.Getenv, Stdout: os.Stdout, Stderr: os.Stderr})
	if err != nil {
		fmt.Fprintln(os.Stderr, "handler:", err)
		os.Exit(1)
	}
}
