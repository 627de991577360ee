package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
)

// Exit codes of the handler.
const (
	ExitOK    = 0 // served and stopped cleanly, or -check passed, or -h, -version
	ExitError = 1 // the settings would not start the gateway, or serving failed
	ExitUsage = 2 // a wrong command line: an unknown flag or any argument
)

// Main is the handler's command line: it parses args (without the program's name) with the
// flag package, then runs `-check`, `-version`, `-h` or the gateway (Run, until ctx ends), and
// returns the process's exit code. Nothing listens unless the command line is exactly right.
func Main(ctx context.Context, args []string, env Env) int {
	fs := flag.NewFlagSet("handler", flag.ContinueOnError)
	check := fs.Bool("check", false, "validate the settings in the environment as a start would, contacting nothing;\nprint a JSON report on stdout and exit 0 if the gateway would start, 1 if not")
	version := fs.Bool("version", false, "print the build's version (module, VCS revision and time, Go version) and exit")
	fs.SetOutput(env.Stderr) // flag's own message for an unknown or malformed flag
	fs.Usage = func() {}     // usage is written below, to stdout for -h, to stderr for mistakes
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(env.Stdout, fs)
			return ExitOK
		}
		usage(env.Stderr, fs)
		return ExitUsage
	}
	switch {
	case fs.NArg() > 0:
		fmt.Fprintf(env.Stderr, "handler: unexpected argument %q: the handler takes no arguments, its settings are environment variables\n", fs.Arg(0))
		usage(env.Stderr, fs)
		return ExitUsage
	case *check && *version:
		fmt.Fprintln(env.Stderr, "handler: -check and -version cannot be given together")
		usage(env.Stderr, fs)
		return ExitUsage
	case *version:
		bi, ok := debug.ReadBuildInfo()
		fmt.Fprint(env.Stdout, versionText(bi, ok))
		return ExitOK
	case *check:
		if err := Check(env.Getenv, env.Stdout); err != nil {
			fmt.Fprintln(env.Stderr, "handler:", err)
			return ExitError
		}
		return ExitOK
	}
	if err := Run(ctx, env); err != nil {
		fmt.Fprintln(env.Stderr, "handler:", err)
		return ExitError
	}
	return ExitOK
}

func usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, `Usage: handler [-check | -version | -h]

handler is the Azure OpenAI failover gateway. The Azure Functions host starts it as a custom
handler; it also runs on its own (a container, a VM). Without flags it serves until SIGTERM or
Ctrl-C: apps call it as they would call an Azure OpenAI resource, and it sends each request to
the first available deployment behind the logical name the app used.

Flags:
`)
	out := fs.Output()
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(out)
	fmt.Fprint(w, `  -h, -help
    	print this help and exit

Settings (environment variables; handler/README.md describes every one):
  GATEWAY_CONFIG                the routing document: inline JSON, or a path to a JSON file
                                (relative to AzureWebJobsScriptRoot, else the working directory)
  GATEWAY_STATE_STORAGE         Table Storage for shared state: a connection string, or
                                identity-based as GATEWAY_STATE_STORAGE__tableServiceUri (with
                                an optional __clientId); unset: AzureWebJobsStorage, same forms
  GATEWAY_STATE_TABLE           table name (default gatewaystate)
  GATEWAY_STATE_PARTITION       partition of the table (default gateway)
  GATEWAY_STATE_REFRESH         how often the table is read (default 1s)
  AZURE_CLIENT_ID               client id of the user-assigned managed identity to use
  GATEWAY_FRONTDOOR_ID          if set, requests with another x-azure-fdid get 403
  FUNCTIONS_CUSTOMHANDLER_PORT  listen on 127.0.0.1:<port> (set by the Functions host);
                                else on PORT, all interfaces; else on :8080
  HTTPS_PROXY, HTTP_PROXY, NO_PROXY   outbound proxy for the backends
  OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_*  OpenTelemetry export over OTLP/HTTP
  GOGC                          the garbage collector's target (200 unless set)
  and the variables the routing document's keyEnv accounts name

Exit status:
  0  stopped cleanly after SIGTERM; -check found the settings good; -h; -version
  1  the settings would not start the gateway (every problem at once, on stderr, or in
     -check's report), or serving failed
  2  a wrong command line: an unknown flag, or any argument
`)
}

// versionText describes the build from its build information: the module's version, the VCS
// revision, its time and whether the tree was modified (when the build recorded them), and
// the Go version.
func versionText(bi *debug.BuildInfo, ok bool) string {
	if !ok || bi == nil {
		return "handler: no build information in this binary\n"
	}
	var b strings.Builder
	v := bi.Main.Version
	if v == "" {
		v = "(unknown)"
	}
	fmt.Fprintf(&b, "handler %s\n", v)
	if bi.Main.Path != "" {
		fmt.Fprintf(&b, "module: %s\n", bi.Main.Path)
	}
	for _, key := range []string{"vcs.revision", "vcs.time", "vcs.modified"} {
		for _, s := range bi.Settings {
			if s.Key == key {
				fmt.Fprintf(&b, "%s: %s\n", strings.TrimPrefix(key, "vcs."), s.Value)
			}
		}
	}
	fmt.Fprintf(&b, "go: %s\n", bi.GoVersion)
	return b.String()
}
