package wire

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// The fuzz targets are differential: wire may refuse what net/http accepts (it is stricter on
// framing), but what both accept they must read the same way.

var requestSeeds = []string{
	"POST /openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21 HTTP/1.1\r\n" +
		"Host: aoai-gw.azurewebsites.net\r\napi-key: 0123456789abcdef\r\nContent-Type: application/json\r\n" +
		"Accept: text/event-stream\r\nx-ms-client-request-id: 9c1e\r\nContent-Length: 62\r\n\r\n" +
		`{"messages":[{"role":"user","content":"Hello"}],"stream":true}`,
	"POST /openai/deployments/emb/embeddings?api-version=2024-10-21 HTTP/1.1\r\nHost: gw\r\n" +
		"Authorization: Bearer eyJ0eXAi.eyJhdWQi.c2ln\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"b\r\n{\"input\":\"\r\n5\r\nhi\"}\n\r\n0\r\nX-Trailer: 1\r\n\r\nGET /next HTTP/1.1\r\nHost: gw\r\n\r\n",
	"GET http://gw.example:8080/openai/models?api-version=2024-10-21 HTTP/1.1\nHost: other\n\n",
	"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\nPragma: no-cache\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc",
	"HEAD /x HTTP/1.1\r\nHost: h:\r\nConnection: close\r\nX-A: 1\r\nx-a: 2\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 01\r\n\r\nx",
	"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX: 1\n\n",
	"POST / HTTP/1.1\r\nHost: h\r\nTrailer: Trailer\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX: 1\n\n",
}

var responseSeeds = []string{
	"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\napim-request-id: 2f1c7a3e-0000\r\n" +
		"x-ratelimit-remaining-tokens: 79000\r\nx-ratelimit-remaining-requests: 479\r\nContent-Length: 58\r\n\r\n" +
		`{"id":"chatcmpl-1","choices":[{"message":{"content":"Hi"}}]}`,
	"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\napim-request-id: a\r\n\r\n" +
		"2b\r\ndata: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n\r\n" +
		"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n",
	"HTTP/1.1 429 Too Many Requests\r\nretry-after: 7\r\nretry-after-ms: 7000\r\nContent-Type: application/json\r\n" +
		"Content-Length: 66\r\n\r\n" + `{"error":{"code":"429","message":"Rate limit is exceeded. Retry"}}`,
	"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
	"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nto the end",
	"HTTP/1.1 500 Internal Server Error\nContent-Length: 2\nContent-Length: 02\n\n{}",
	"HTTP/1.1 103 Early Hints\r\nContent-Length: x\r\n\r\nHTTP/1.1 304 Not Modified\r\nTransfer-Encoding: gzip\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTrailer: Content-Length\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nbad trailer\n\n",
}

func FuzzReadRequest(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		wr := newReader(data)
		wreq, werr := ReadRequest(context.Background(), wr)
		nr := newReader(data)
		nreq, nerr := http.ReadRequest(nr)
		if werr != nil {
			return // wire is stricter: refusing is always allowed
		}
		if nerr != nil {
			if !refusalJustified(nerr, false) {
				t.Fatalf("wire accepts what net/http refuses (%v):\n%q", nerr, data)
			}
			return
		}
		target := wreq.RequestURI
		nhost := nreq.Host
		if wreq.Method != nreq.Method || wreq.URL.Path != nreq.URL.Path || wreq.URL.RawQuery != nreq.URL.RawQuery ||
			wreq.Host != nhost || wreq.Proto != nreq.Proto || wreq.ProtoMinor != nreq.ProtoMinor || target != nreq.RequestURI {
			t.Fatalf("heads differ: wire %s %q %q %q %s, net/http %s %q %q %q %s\n%q",
				wreq.Method, wreq.URL.Path, wreq.URL.RawQuery, wreq.Host, wreq.Proto,
				nreq.Method, nreq.URL.Path, nreq.URL.RawQuery, nhost, nreq.Proto, data)
		}
		// net/http keeps Host in the header (wire moves it to req.Host only), adds Cache-Control
		// for Pragma: no-cache, keeps one of several equal lengths and drops a chunked request's
		// Trailer declaration into req.Trailer.
		want := nreq.Header.Clone()
		delete(want, "Host")
		got := normalizeLengths(wreq.Header.Clone())
		if p := got["Pragma"]; len(p) > 0 && p[0] == "no-cache" && got["Cache-Control"] == nil {
			got["Cache-Control"] = []string{"no-cache"}
		}
		if wreq.TransferEncoding != nil {
			delete(got, "Trailer")
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("headers differ: wire %v, net/http %v\n%q", got, want, data)
		}
		if wreq.ContentLength != nreq.ContentLength || wreq.Close != nreq.Close ||
			!reflect.DeepEqual(wreq.TransferEncoding, nreq.TransferEncoding) {
			t.Fatalf("framing differs: wire %d %v %v, net/http %d %v %v\n%q", wreq.ContentLength, wreq.Close,
				wreq.TransferEncoding, nreq.ContentLength, nreq.Close, nreq.TransferEncoding, data)
		}
		compareBodies(t, data, wreq.Body, nreq.Body, wr, nr, wreq.TransferEncoding != nil)
	})
}

func newReader(data []byte) *bufio.Reader {
	return bufio.NewReaderSize(bytes.NewReader(data), 4096)
}

// compareBodies reads both bodies to their end and then what follows them: the bytes must be
// the same, and so must whether reading failed.
func compareBodies(t *testing.T, data []byte, wb, nb io.Reader, wr, nr *bufio.Reader, chunked bool) {
	t.Helper()
	wbody, werr := io.ReadAll(wb)
	nbody, nerr := io.ReadAll(nb)
	if !bytes.Equal(wbody, nbody) {
		t.Fatalf("bodies differ: wire %q (%v), net/http %q (%v)\n%q", wbody, werr, nbody, nerr, data)
	}
	if (werr == nil) != (nerr == nil) {
		// Both read the chunks with net/http's chunked reader, so with the same data read, only
		// the trailer section can differ: wire drops it unparsed (nothing of it reaches a handler)
		// and bounds it by line count, net/http parses it and bounds it by its read buffer.
		if chunked {
			return
		}
		t.Fatalf("body errors differ: wire %v, net/http %v\n%q", werr, nerr, data)
	}
	if werr != nil {
		return
	}
	wrest, _ := io.ReadAll(wr)
	nrest, _ := io.ReadAll(nr)
	if !bytes.Equal(wrest, nrest) {
		t.Fatalf("bodies end at different places: after wire %q, after net/http %q\n%q", wrest, nrest, data)
	}
}

// refusalJustified reports whether net/http's refusal of a message wire accepted comes from a
// check that does not matter to wire's reading of it:
//   - several Content-Length fields with the same number written differently ("5", "05"):
//     RFC 9110 8.6 lets a recipient take the one value; net/http compares the text.
//   - a Trailer declaration naming a field that may not be a trailer: wire never fills
//     Trailer and drops the trailer section, so the declaration has no effect.
//   - the length or coding fields of an answer that has no body (HEAD, 1xx, 204, 304): wire
//     reads no body, so they frame nothing; net/http validates them anyway.
func refusalJustified(err error, bodyless bool) bool {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "multiple Content-Length headers"), strings.Contains(msg, "bad trailer key"):
		return true
	case bodyless:
		return strings.Contains(msg, "Content-Length") || strings.Contains(msg, "transfer encoding")
	}
	return false
}

// peekStatus is the status code of the response at the start of br, or 0.
func peekStatus(br *bufio.Reader) int {
	b, _ := br.Peek(12)
	if len(b) < 12 {
		return 0
	}
	code, _ := strconv.Atoi(string(b[9:12]))
	return code
}

// normalizeLengths keeps one of several Content-Length values that wire accepted as equal, as
// net/http does.
func normalizeLengths(h http.Header) http.Header {
	if cl := h["Content-Length"]; len(cl) > 1 {
		if _, err := strconv.ParseInt(cl[0], 10, 64); err == nil {
			h["Content-Length"] = cl[:1]
		}
	}
	return h
}
