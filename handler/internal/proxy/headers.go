package proxy

import (
	"net/http"
	"net/textproto"
	"strings"
)

const (
	headerServedBy = "X-Served-By"
	headerAttempts = "X-Gateway-Attempts"
)

// hopByHop headers belong to one connection and are never forwarded (RFC 9110 7.6.1). (A
// switch, not a map: it is asked for every header of every request and response.)
func hopByHop(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// callerOnly headers carry the caller's credentials or describe the caller's own request body;
// the gateway sets its own.
func callerOnly(k string) bool {
	switch k {
	case "Api-Key", "Authorization", "Cookie", "Ocp-Apim-Subscription-Key",
		"Host", "Content-Length", "Expect",
		// The Functions host's own invocation headers mean nothing to a backend.
		"X-Azure-Functions-Hostversion", "X-Azure-Functions-Invocationid", "X-Ms-Invocation-Id",
		// The gateway's own routing header.
		"X-Gateway-Deployment":
		return true
	}
	return false
}

// outboundHeaders copies the caller's headers for a backend request into out, minus hop-by-hop
// and credential headers. Accept-Encoding is dropped for streams so that events can be read.
func outboundHeaders(out, in http.Header, stream bool) {
	named := connectionNamed(in)
	for k, vv := range in {
		if hopByHop(k) || callerOnly(k) || named[k] || (stream && k == "Accept-Encoding") {
			continue
		}
		out[k] = vv
	}
}

// copyResponseHeaders copies a backend's response headers to the caller, minus hop-by-hop and
// CORS headers: which browser origins may read an answer is the gateway's decision.
func copyResponseHeaders(dst, src http.Header) {
	named := connectionNamed(src)
	for k, vv := range src {
		if hopByHop(k) || named[k] || strings.HasPrefix(k, "Access-Control-") {
			continue
		}
		dst[k] = vv
	}
}

// connectionNamed returns the headers a Connection header lists, which are hop-by-hop too.
func connectionNamed(h http.Header) map[string]bool {
	vv := h["Connection"]
	if len(vv) == 0 {
		return nil
	}
	named := map[string]bool{}
	for _, v := range vv {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				named[textproto.CanonicalMIMEHeaderKey(f)] = true
			}
		}
	}
	return named
}
