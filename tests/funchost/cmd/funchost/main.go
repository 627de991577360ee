// Command funchost runs a packaged function app under the stand-in Functions host (package
// funchost), for trying the gateway the way Azure runs it where Core Tools cannot be installed:
//
//	go run ./infra/pack -stage dist/app
//	go run ./tests/funchost/cmd/funchost -app dist/app [-listen 127.0.0.1:7071]
//
// The app's local.settings.json Values (or the repository's, with -settings) are added to the
// environment, as `func start` does. Ctrl-C stops the host, which kills the handler as the real
// host does. `func start` remains the real thing.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/aoai-failover/gateway/tests/funchost"
)

func main() {
	appDir := flag.String("app", ".", "the function app folder (host.json, function/, bin/handler)")
	listen := flag.String("listen", "127.0.0.1:7071", "where the host listens")
	settings := flag.String("settings", "", "local.settings.json to read (default: the app folder's, if any)")
	flag.Parse()
	if flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	env := os.Environ()
	path := *settings
	if path == "" {
		path = filepath.Join(*appDir, "local.settings.json")
	}
	if b, err := os.ReadFile(path); err == nil {
		var ls struct {
			Values map[string]string `json:"Values"`
		}
		if err := json.Unmarshal(b, &ls); err != nil {
			fmt.Fprintf(os.Stderr, "funchost: %s: %v\n", path, err)
			os.Exit(1)
		}
		for k, v := range ls.Values {
			env = append(env, k+"="+v)
		}
	} else if *settings != "" {
		fmt.Fprintln(os.Stderr, "funchost:", err)
		os.Exit(1)
	}
	h, err := funchost.Start(funchost.Options{AppDir: *appDir, Env: env, Addr: *listen, Log: os.Stderr})
	if err != nil {
		fmt.Fprintln(os.Stderr, "funchost:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "funchost: the app is on %s\n", h.URL)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	select {
	case <-sig:
		h.Close()
	case <-h.Stopped():
		h.Close()
		os.Exit(1)
	}
}
