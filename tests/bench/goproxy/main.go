// Command goproxy is the plainest well-tuned Go reverse proxy (net/http's ReverseProxy, a
// Transport that keeps enough connections, immediate flushing) for the benchmark: it shows what
// any proxy built on net/http costs on the machine, so the gateway's own work can be told apart.
package main

import (
	"flag"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	backend := flag.String("backend", "", "backend base URL")
	flag.Parse()
	u, err := url.Parse(*backend)
	if err != nil || u.Host == "" {
		log.Fatalf("goproxy: bad -backend %q", *backend)
	}
	rp := &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.SetURL(u) },
		FlushInterval: -1,
		Transport: &http.Transport{
			MaxIdleConns: 2048, MaxIdleConnsPerHost: 1024, IdleConnTimeout: 90 * time.Second, DisableCompression: true,
		},
	}
	log.Fatal(http.ListenAndServe(*listen, rp))
}
