package wire

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestReadRequest(t *testing.T) {
	tests := []struct {
		name     string
		raw      string
		method   string
		path     string
		rawQuery string
		host     string
		proto    string
		header   http.Header
		length   int64
		chunked  bool
		body     string
		close    bool
	}{
		{
			name: "chat completions POST",
			raw: "POST /openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21 HTTP/1.1\r\n" +
				"Host: gw.example.net\r\napi-key: k1\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n" +
				`{"messages":[1]}` + "\n",
			method: "POST", path: "/openai/deployments/gpt-4o/chat/completions", rawQuery: "api-version=2024-10-21",
			host: "gw.example.net", proto: "HTTP/1.1",
			header: http.Header{"Api-Key": {"k1"}, "Content-Type": {"application/json"}, "Content-Length": {"17"}},
			length: 17, body: `{"messages":[1]}` + "\n",
		},
		{
			name:   "absolute form takes Host from the URL",
			raw:    "GET http://upstream.example:8080/models?a=1&b=2 HTTP/1.1\r\nHost: ignored.example\r\n\r\n",
			method: "GET", path: "/models", rawQuery: "a=1&b=2", host: "upstream.example:8080", proto: "HTTP/1.1",
			header: http.Header{},
		},
		{
			name:   "https absolute form",
			raw:    "DELETE https://h.example/x HTTP/1.1\r\nHost: h.example\r\n\r\n",
			method: "DELETE", path: "/x", host: "h.example", proto: "HTTP/1.1", header: http.Header{},
		},
		{
			name: "canonical names, repeated values in order, trimmed values",
			raw: "PATCH /p HTTP/1.1\r\nhost: h\r\nx-ms-client-request-id:  abc \t\r\nX-A: 1\r\nx-a: 2\r\nX-A:3\r\n" +
				"API-KEY: k\r\nX-Empty:\r\n\r\n",
			method: "PATCH", path: "/p", host: "h", proto: "HTTP/1.1",
			header: http.Header{"X-Ms-Client-Request-Id": {"abc"}, "X-A": {"1", "2", "3"}, "Api-Key": {"k"}, "X-Empty": {""}},
		},
		{
			name:   "bare LF line endings",
			raw:    "PUT /f HTTP/1.1\nHost: h\nContent-Length: 3\n\nabc",
			method: "PUT", path: "/f", host: "h", proto: "HTTP/1.1",
			header: http.Header{"Content-Length": {"3"}}, length: 3, body: "abc",
		},
		{
			name:   "chunked body with trailer",
			raw:    "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: 1\r\n\r\n",
			method: "POST", path: "/c", host: "h", proto: "HTTP/1.1",
			header: http.Header{}, length: -1, chunked: true, body: "hello world",
		},
		{
			name:   "identical Content-Length values",
			raw:    "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
			method: "POST", path: "/", host: "h", proto: "HTTP/1.1",
			header: http.Header{"Content-Length": {"2", "2"}}, length: 2, body: "ok",
		},
		{
			name:   "HTTP/1.1 Connection close",
			raw:    "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Close\r\n\r\n",
			method: "GET", path: "/", host: "h", proto: "HTTP/1.1",
			header: http.Header{"Connection": {"keep-alive, Close"}}, close: true,
		},
		{
			name:   "HTTP/1.0 without Host closes by default",
			raw:    "GET /old HTTP/1.0\r\n\r\n",
			method: "GET", path: "/old", proto: "HTTP/1.0", header: http.Header{}, close: true,
		},
		{
			name:   "HTTP/1.0 keep-alive",
			raw:    "POST /old HTTP/1.0\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\nx",
			method: "POST", path: "/old", proto: "HTTP/1.0",
			header: http.Header{"Connection": {"Keep-Alive"}, "Content-Length": {"1"}}, length: 1, body: "x",
		},
		{
			name:   "extension method",
			raw:    "PROPFIND /d HTTP/1.1\r\nHost: h\r\n\r\n",
			method: "PROPFIND", path: "/d", host: "h", proto: "HTTP/1.1", header: http.Header{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReader(strings.NewReader(tt.raw))
			req, err := ReadRequest(context.Background(), br)
			if err != nil {
				t.Fatalf("ReadRequest: %v", err)
			}
			if req.Method != tt.method || req.URL.Path != tt.path || req.URL.RawQuery != tt.rawQuery ||
				req.Host != tt.host || req.Proto != tt.proto {
				t.Errorf("got %s %q ?%q host %q %s; want %s %q ?%q host %q %s", req.Method, req.URL.Path,
					req.URL.RawQuery, req.Host, req.Proto, tt.method, tt.path, tt.rawQuery, tt.host, tt.proto)
			}
			if !reflect.DeepEqual(req.Header, tt.header) {
				t.Errorf("header = %v, want %v", req.Header, tt.header)
			}
			if req.ContentLength != tt.length || req.Close != tt.close {
				t.Errorf("ContentLength, Close = %d, %v; want %d, %v", req.ContentLength, req.Close, tt.length, tt.close)
			}
			if got := len(req.TransferEncoding) == 1 && req.TransferEncoding[0] == "chunked"; got != tt.chunked {
				t.Errorf("TransferEncoding = %v", req.TransferEncoding)
			}
			if req.RequestURI == "" || req.Context() == nil {
				t.Errorf("RequestURI %q, context %v", req.RequestURI, req.Context())
			}
			body, err := io.ReadAll(req.Body)
			if err != nil || string(body) != tt.body {
				t.Errorf("body = %q, %v; want %q", body, err, tt.body)
			}
			if n := br.Buffered(); n != 0 {
				t.Errorf("%d bytes left after the message", n)
			}
		})
	}
}

func TestReadRequestErrors(t *testing.T) {
	const host = "Host: h\r\n"
	tests := []struct {
		name string
		raw  string
		want error
	}{
		{"missing Host on HTTP/1.1", "GET / HTTP/1.1\r\n\r\n", ErrMalformed},
		{"two Host headers", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", ErrMalformed},
		{"invalid Host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", ErrMalformed},
		{"two-part request line", "GET /\r\n" + host + "\r\n", ErrMalformed},
		{"empty method", " / HTTP/1.1\r\n" + host + "\r\n", ErrMalformed},
		{"method with a separator", "GE(T / HTTP/1.1\r\n" + host + "\r\n", ErrMalformed},
		{"not HTTP", "GET / FTP/1.1\r\n" + host + "\r\n", ErrMalformed},
		{"lower-case version", "GET / http/1.1\r\n" + host + "\r\n", ErrMalformed},
		{"header without colon", "GET / HTTP/1.1\r\n" + host + "NoColon\r\n\r\n", ErrMalformed},
		{"space before colon", "GET / HTTP/1.1\r\n" + host + "X-A : 1\r\n\r\n", ErrMalformed},
		{"empty name", "GET / HTTP/1.1\r\n" + host + ": 1\r\n\r\n", ErrMalformed},
		{"obsolete line folding", "GET / HTTP/1.1\r\n" + host + "X-A: 1\r\n 2\r\n\r\n", ErrMalformed},
		{"folding on the first line", "GET / HTTP/1.1\r\n X-A: 1\r\n" + host + "\r\n", ErrMalformed},
		{"CR in a value", "GET / HTTP/1.1\r\n" + host + "X-A: a\rb\r\n\r\n", ErrMalformed},
		{"NUL in a value", "GET / HTTP/1.1\r\n" + host + "X-A: a\x00b\r\n\r\n", ErrMalformed},
		{"DEL in a value", "GET / HTTP/1.1\r\n" + host + "X-A: a\x7fb\r\n\r\n", ErrMalformed},
		{"HTTP/2.0", "GET / HTTP/2.0\r\n" + host + "\r\n", ErrBadVersion},
		{"HTTP/1.2", "GET / HTTP/1.2\r\n" + host + "\r\n", ErrBadVersion},
		{"asterisk form", "OPTIONS * HTTP/1.1\r\n" + host + "\r\n", ErrBadRequestURI},
		{"authority form", "CONNECT h:443 HTTP/1.1\r\n" + host + "\r\n", ErrBadRequestURI},
		{"fragment", "GET /a#b HTTP/1.1\r\n" + host + "\r\n", ErrBadRequestURI},
		{"other scheme", "GET ftp://h/a HTTP/1.1\r\n" + host + "\r\n", ErrBadRequestURI},
		{"bad escape", "GET /a%zz HTTP/1.1\r\n" + host + "\r\n", ErrBadRequestURI},
		{"control char in target", "GET /a\x01b HTTP/1.1\r\n" + host + "\r\n", ErrBadRequestURI},
		{"empty target", "GET  HTTP/1.1\r\n" + host + "\r\n", ErrBadRequestURI},
		{"letters in Content-Length", "POST / HTTP/1.1\r\n" + host + "Content-Length: 1a\r\n\r\n", ErrBadLength},
		{"negative Content-Length", "POST / HTTP/1.1\r\n" + host + "Content-Length: -1\r\n\r\n", ErrBadLength},
		{"signed Content-Length", "POST / HTTP/1.1\r\n" + host + "Content-Length: +1\r\n\r\n", ErrBadLength},
		{"empty Content-Length", "POST / HTTP/1.1\r\n" + host + "Content-Length:\r\n\r\n", ErrBadLength},
		{"Content-Length list", "POST / HTTP/1.1\r\n" + host + "Content-Length: 1, 1\r\n\r\n", ErrBadLength},
		{"different Content-Lengths", "POST / HTTP/1.1\r\n" + host + "Content-Length: 1\r\nContent-Length: 2\r\n\r\n", ErrBadLength},
		{"overflowing Content-Length", "POST / HTTP/1.1\r\n" + host + "Content-Length: 99999999999999999999\r\n\r\n", ErrBadLength},
		{"gzip coding", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: gzip\r\n\r\n", ErrBadEncoding},
		{"coding list", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: gzip, chunked\r\n\r\n", ErrBadEncoding},
		{"two TE headers", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", ErrBadEncoding},
		{"chunked on HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", ErrBadEncoding},
		{"length and chunked", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", ErrLengthAndTE},
		{"too many header lines", "GET / HTTP/1.1\r\n" + host + strings.Repeat("X-A: 1\r\n", MaxHeaderLines+1) + "\r\n", ErrHeadTooLong},
		{"line over 64 KiB", "GET / HTTP/1.1\r\n" + host + "X-A: " + strings.Repeat("a", 70<<10) + "\r\n\r\n", ErrHeadTooLong},
		{"request line over 64 KiB", "GET /" + strings.Repeat("a", 70<<10) + " HTTP/1.1\r\n" + host + "\r\n", ErrHeadTooLong},
		{"empty input", "", io.EOF},
		{"cut inside a line", "GET / HTTP/1.1\r\nHo", io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := ReadRequest(context.Background(), bufio.NewReader(strings.NewReader(tt.raw)))
			if !errors.Is(err, tt.want) || req != nil {
				t.Fatalf("ReadRequest = %v, %v; want error %v", req, err, tt.want)
			}
			if strings.Contains(err.Error(), "h\r") || strings.Contains(err.Error(), "X-A") {
				t.Errorf("error %q quotes the message", err)
			}
		})
	}
}

func TestReadRequestLongLineWithinLimit(t *testing.T) {
	// Longer than the read buffer but within the line bound: put together in one piece.
	token := "Bearer " + strings.Repeat("t", 60<<10)
	raw := "GET / HTTP/1.1\r\nHost: h\r\nAuthorization: " + token + "\r\nX-After: 1\r\n\r\n"
	req, err := ReadRequest(context.Background(), bufio.NewReaderSize(strings.NewReader(raw), 4096))
	if err != nil {
		t.Fatal(err)
	}
	if got := req.Header.Get("Authorization"); got != token || req.Header.Get("X-After") != "1" {
		t.Fatalf("Authorization has %d bytes, X-After %q", len(got), req.Header.Get("X-After"))
	}
}

func TestReadRequestMaxHeaderLines(t *testing.T) {
	raw := "GET / HTTP/1.1\r\nHost: h\r\n" + strings.Repeat("X-A: 1\r\n", MaxHeaderLines-1) + "\r\n"
	if _, err := ReadRequest(context.Background(), bufio.NewReader(strings.NewReader(raw))); err != nil {
		t.Fatalf("%d header lines: %v", MaxHeaderLines, err)
	}
}

func TestReadRequestDoubleSlashTarget(t *testing.T) {
	raw := "GET //evil.example/openai/models?x=1 HTTP/1.1\r\nHost: gw.example\r\n\r\n"
	req, err := ReadRequest(context.Background(), bufio.NewReader(strings.NewReader(raw)))
	if err != nil {
		t.Fatal(err)
	}
	// An origin-form target is all path (RFC 9112 3.2.1), as net/http reads it.
	if req.URL.Path != "//evil.example/openai/models" || req.URL.Host != "" || req.Host != "gw.example" {
		t.Fatalf("path %q, URL host %q, Host %q", req.URL.Path, req.URL.Host, req.Host)
	}
}

func TestReadRequestBodies(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		body    string
		bodyErr error
	}{
		{"length", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello", "hello", nil},
		{"zero length", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", "", nil},
		{"chunked without trailer", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", "abc", nil},
		{"chunked with trailers", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nA: 1\r\nB: 2\r\n\r\n", "abc", nil},
		{"bare LF head and trailer end", "POST / HTTP/1.1\nHost: h\nTransfer-Encoding: chunked\n\n3\r\nabc\r\n0\r\nA: 1\n\n", "abc", nil},
		// As in net/http: a chunk-size line must end in CRLF (a bare LF there is a smuggling vector).
		{"bare LF chunk line", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n", "", errAny},
		{"truncated length body", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nhel", "hel", io.ErrUnexpectedEOF},
		{"truncated chunk", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\na\r\nhel", "hel", io.ErrUnexpectedEOF},
		{"truncated trailer", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nA: 1\r\n", "abc", io.ErrUnexpectedEOF},
		{"bad chunk size", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", "", errAny},
		// A trailer is checked as a head is: a request line hidden in it is refused, not swallowed.
		{"request line in the trailer", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nGET /x HTTP/1.1\r\n\x01\x7f: :\r\n\r\n", "abc", ErrMalformed},
		{"trailer over the line limit", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n" + strings.Repeat("A: 1\r\n", MaxHeaderLines+1) + "\r\n", "abc", ErrHeadTooLong},
	}
	const next = "GET /next HTTP/1.1\r\nHost: h\r\n\r\n"
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := tt.raw
			if tt.bodyErr == nil {
				raw += next // the body must end exactly where the next request starts
			}
			br := bufio.NewReaderSize(strings.NewReader(raw), 16)
			req, err := ReadRequest(context.Background(), br)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(req.Body)
			if string(body) != tt.body {
				t.Errorf("body = %q, want %q", body, tt.body)
			}
			switch {
			case tt.bodyErr == errAny:
				if err == nil {
					t.Errorf("body read: no error")
				}
				return
			case tt.bodyErr != nil:
				if !errors.Is(err, tt.bodyErr) {
					t.Errorf("body read: %v, want %v", err, tt.bodyErr)
				}
				// The failure stays: a later read does not report a clean end.
				if _, again := req.Body.Read(make([]byte, 1)); !errors.Is(again, tt.bodyErr) {
					t.Errorf("read after the failure: %v, want %v again", again, tt.bodyErr)
				}
				return
			case err != nil:
				t.Fatalf("body read: %v", err)
			}
			if n, err := req.Body.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Errorf("read after the end = %d, %v", n, err)
			}
			req2, err := ReadRequest(context.Background(), br)
			if err != nil || req2.URL.Path != "/next" {
				t.Fatalf("next request: %v, %v", req2, err)
			}
		})
	}
}

// errAny stands for "some error" in the tables.
var errAny = errors.New("any error")

// chunk frames s as one chunk of a chunked body.
func chunk(s string) string {
	return strconv.FormatInt(int64(len(s)), 16) + "\r\n" + s + "\r\n"
}

func TestStatusLine(t *testing.T) {
	for _, tt := range []struct {
		code int
		want string
	}{
		{200, "200 OK"}, {429, "429 Too Many Requests"}, {504, "504 Gateway Timeout"},
		{299, "299 status code 299"}, {700, "700 status code 700"}, {-1, "-1 status code -1"},
	} {
		if got := StatusLine(tt.code); got != tt.want {
			t.Errorf("StatusLine(%d) = %q, want %q", tt.code, got, tt.want)
		}
	}
}
