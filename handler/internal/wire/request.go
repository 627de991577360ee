package wire

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"net/url"

	"golang.org/x/net/http/httpguts"
)

// ReadRequest reads a request from br: its line and headers, and a body reader framed by them.
// It makes the checks net/http's server makes (a Host header for HTTP/1.1, and only one;
// valid names and values) and is stricter on framing: a request with both Content-Length and
// Transfer-Encoding, the classic way to smuggle a second request past a proxy, is refused.
func ReadRequest(ctx context.Context, br *bufio.Reader) (*http.Request, error) {
	sc := getScratch()
	defer sc.release()
	line, err := readLine(br, sc)
	if err != nil {
		return nil, err
	}
	method, rest, ok1 := bytes.Cut(line, []byte(" "))
	target, version, ok2 := bytes.Cut(rest, []byte(" "))
	if !ok1 || !ok2 || len(method) == 0 || !validName(method) {
		return nil, ErrMalformed
	}
	var minor int
	switch string(version) {
	case "HTTP/1.1":
		minor = 1
	case "HTTP/1.0":
	default:
		if bytes.HasPrefix(version, []byte("HTTP/")) {
			return nil, ErrBadVersion
		}
		return nil, ErrMalformed
	}
	// Origin form (/path?query), or absolute form (http://host/path?query), which a server
	// must accept (RFC 9112 3.2.2). No fragment, no control characters or spaces.
	if len(target) == 0 || bytes.IndexByte(target, '#') >= 0 ||
		!(target[0] == '/' || bytes.HasPrefix(target, []byte("http://")) || bytes.HasPrefix(target, []byte("https://"))) {
		return nil, ErrBadRequestURI
	}
	for _, b := range target {
		if b <= ' ' || b == 0x7f {
			return nil, ErrBadRequestURI
		}
	}
	uri := string(target)
	// As net/http reads a request target: "//a/b" is a path, never a host named a.
	u, err := url.ParseRequestURI(uri)
	if err != nil {
		return nil, ErrBadRequestURI
	}
	proto := "HTTP/1.1"
	if minor == 0 {
		proto = "HTTP/1.0"
	}
	req := (&http.Request{Method: methodName(method), URL: u, Host: u.Host, RequestURI: uri,
		Proto: proto, ProtoMajor: 1, ProtoMinor: minor}).WithContext(ctx)
	if req.Header, err = readHeader(br, sc); err != nil {
		return nil, err
	}
	h := req.Header

	hosts := h["Host"]
	switch {
	case len(hosts) > 1:
		return nil, ErrMalformed
	case req.Host == "" && len(hosts) == 1:
		req.Host = hosts[0]
	}
	if minor == 1 && len(hosts) == 0 || req.Host != "" && !httpguts.ValidHostHeader(req.Host) {
		return nil, ErrMalformed
	}
	delete(h, "Host")

	req.Close = httpguts.HeaderValuesContainsToken(h["Connection"], "close") ||
		minor == 0 && !httpguts.HeaderValuesContainsToken(h["Connection"], "keep-alive")

	te, hasTE := h["Transfer-Encoding"]
	cl, hasCL := h["Content-Length"]
	switch {
	case hasTE && hasCL:
		return nil, ErrLengthAndTE
	case hasTE:
		if minor == 0 || !isChunked(te) {
			return nil, ErrBadEncoding
		}
		delete(h, "Transfer-Encoding")
		req.TransferEncoding, req.ContentLength = chunkedEncoding, -1
		req.Body = framedBody(br, -1)
	case hasCL:
		n, err := parseLength(cl)
		if err != nil {
			return nil, err
		}
		req.ContentLength, req.Body = n, framedBody(br, n)
	default:
		req.ContentLength, req.Body = 0, http.NoBody
	}
	return req, nil
}

// methodName returns the method, without allocating for the common ones.
func methodName(b []byte) string {
	switch string(b) {
	case http.MethodPost:
		return http.MethodPost
	case http.MethodGet:
		return http.MethodGet
	case http.MethodHead:
		return http.MethodHead
	}
	return string(b)
}
