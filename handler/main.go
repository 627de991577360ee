// Command handler is the Azure OpenAI failover gateway, run by the Azure Functions host as a
// custom handler (or on its own, in a container or VM).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/aoai-failover/gateway/handler/internal/app"
)

func main() {
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
