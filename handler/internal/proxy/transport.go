package proxy

import (
	"crypto/tls"
	"net"
	"net/http"
	"net/url"
	"time"
)

// MaxResponseHeaderBytes bounds a backend's response head. Azure OpenAI's are about 2 KiB; a
// larger one is a broken backend, and the attempt fails over.
const MaxResponseHeaderBytes = 256 << 10

// NewTransport returns the one client the gateway calls every backend with: net/http's
// Transport, for direct, proxied and TLS backends alike, HTTP/2 where the backend offers it.
// Its framing rules and its idle-connection checks are what keep one caller's answer from
// reaching another (a backend that sends bytes past an answer's end, or on an idle
// connection, loses the connection). proxy is how an outbound proxy is chosen per request
// (nil: none). Compression is left to the caller and the backend, so bytes pass as they are.
func NewTransport(connect time.Duration, proxy func(*http.Request) (*url.URL, error)) *http.Transport {
	d := &net.Dialer{Timeout: connect, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:               proxy,
		DialContext:         d.DialContext,
		TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: connect,
		ForceAttemptHTTP2:   true,
		// The default of 2 idle connections per host makes a busy gateway dial for most
		// requests; a backend is one host, so the pool is per host in practice.
		MaxIdleConns:           4096,
		MaxIdleConnsPerHost:    1024,
		IdleConnTimeout:        90 * time.Second,
		DisableCompression:     true,
		MaxResponseHeaderBytes: MaxResponseHeaderBytes,
		// The attempt's own watchdog bounds the wait for the response head (it depends on the
		// request: a long completion's head comes only when it is done).
		ResponseHeaderTimeout: 0,
		// A connection holds its buffers for its whole life, and under load there are more
		// connections than requests in flight (512 concurrent streams kept about 800). A request
		// is written once (a larger body goes past the buffer), and a response's head and events
		// are small: 1 and 2 KiB instead of 4 took 512 streams from 69 to 61 MiB.
		WriteBufferSize: 1 << 10,
		ReadBufferSize:  2 << 10,
	}
}
