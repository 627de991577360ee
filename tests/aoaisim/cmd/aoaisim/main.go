// Command aoaisim serves the Azure OpenAI simulator on its own, for local runs under
// `func start`, the demo's curl examples and the benchmark.
//
//	aoaisim -listen 127.0.0.1:9001 -config sim.json
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/aoai-failover/gateway/tests/aoaisim"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9001", "address to listen on")
	configPath := flag.String("config", "", "JSON file with the simulator's Config (default: deployments micro and big)")
	flag.Parse()
	if err := run(*listen, *configPath); err != nil {
		fmt.Fprintln(os.Stderr, "aoaisim:", err)
		os.Exit(1)
	}
}

func run(listen, configPath string) error {
	cfg := aoaisim.Config{Deployments: map[string]aoaisim.Deployment{
		"micro": {Model: "gpt-4o-mini", TPM: 1000},
		"big":   {Model: "gpt-4o-mini", TPM: 40000},
	}}
	if configPath != "" {
		b, err := os.ReadFile(configPath)
		if err != nil {
			return err
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		cfg = aoaisim.Config{}
		if err := dec.Decode(&cfg); err != nil {
			return fmt.Errorf("%s: %w", configPath, err)
		}
	}
	if cfg.MaxRecords == 0 {
		cfg.MaxRecords = -1 // nothing reads the records of the standalone simulator
	}
	sim, err := aoaisim.New(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	fmt.Printf("aoaisim listening on http://%s (deployments: %v)\n", ln.Addr(), sim.Names())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
