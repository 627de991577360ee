// Package wire reads HTTP/1.1 request heads and frames their bodies, for the gateway's server.
// Framing follows RFC 9112 strictly: anything ambiguous (a length and chunked together, lengths
// that disagree, folded header lines, a transfer coding other than chunked) is refused rather
// than guessed, which is what keeps a request smuggled behind another from being answered.
// (Backends' responses are read by net/http's Transport.)
package wire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/net/http/httpguts"
)

// MaxHeaderLines bounds the header lines of one message (and of a chunked body's trailer).
const MaxHeaderLines = 200

// Errors of a malformed message. None quotes the message: its bytes may hold a credential.
var (
	ErrHeadTooLong   = errors.New("message head too long")
	ErrMalformed     = errors.New("malformed message head")
	ErrBadLength     = errors.New("invalid Content-Length")
	ErrBadEncoding   = errors.New("unsupported Transfer-Encoding")
	ErrLengthAndTE   = errors.New("both Content-Length and Transfer-Encoding")
	ErrBadVersion    = errors.New("unsupported HTTP version")
	ErrBadRequestURI = errors.New("invalid request target")
)

// maxLine bounds one line of a head; the server also bounds the whole head.
const maxLine = 64 << 10

// readLine returns the next line without its CRLF (or bare LF). A line longer than the read
// buffer is put together in sc.long. The line is valid until the next read.
func readLine(br *bufio.Reader, sc *scratch) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		long := append(sc.long[:0], line...)
		for errors.Is(err, bufio.ErrBufferFull) {
			if len(long) > maxLine {
				return nil, ErrHeadTooLong
			}
			line, err = br.ReadSlice('\n')
			long = append(long, line...)
		}
		sc.long, line = long, long
	}
	if err != nil {
		if err == io.EOF && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// scratch collects one head's header values before they become one string.
type scratch struct {
	text  []byte
	spans []span
	long  []byte // a line longer than the read buffer
}

type span struct {
	key        string
	start, end int
}

var scratches = sync.Pool{New: func() any { return &scratch{} }}

func getScratch() *scratch { return scratches.Get().(*scratch) }

func (sc *scratch) release() {
	if cap(sc.long) > 8<<10 {
		sc.long = nil // a rare long line is not kept
	}
	if cap(sc.text) > 64<<10 {
		sc.text = nil // nor the values of a rare large head
	}
	sc.text, sc.spans = sc.text[:0], sc.spans[:0]
	scratches.Put(sc)
}

// readHeader reads header lines up to the empty line that ends them.
func readHeader(br *bufio.Reader, sc *scratch) (http.Header, error) {
	sc.text, sc.spans = sc.text[:0], sc.spans[:0]
	for n := 0; ; n++ {
		line, err := readLine(br, sc)
		if err != nil {
			return nil, err
		}
		if len(line) == 0 {
			break
		}
		if n == MaxHeaderLines {
			return nil, ErrHeadTooLong
		}
		if line[0] == ' ' || line[0] == '\t' {
			return nil, ErrMalformed // obsolete line folding (RFC 9112 5.2)
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !validName(line[:colon]) {
			return nil, ErrMalformed
		}
		value := trimSpace(line[colon+1:])
		if !validValue(value) {
			return nil, ErrMalformed
		}
		start := len(sc.text)
		sc.text = append(sc.text, value...)
		sc.spans = append(sc.spans, span{key: canonicalName(line[:colon]), start: start, end: len(sc.text)})
	}
	all := string(sc.text)
	values := make([]string, len(sc.spans))
	h := make(http.Header, len(sc.spans))
	for i, s := range sc.spans {
		values[i] = all[s.start:s.end]
		if prev, ok := h[s.key]; ok {
			h[s.key] = append(prev[:len(prev):len(prev)], values[i])
		} else {
			h[s.key] = values[i : i+1 : i+1]
		}
	}
	return h, nil
}

func validName(name []byte) bool {
	for _, b := range name {
		if !httpguts.IsTokenRune(rune(b)) {
			return false
		}
	}
	return true
}

// validValue refuses control characters other than tab (a stray CR above all).
func validValue(v []byte) bool {
	for _, b := range v {
		if b < ' ' && b != '\t' || b == 0x7f {
			return false
		}
	}
	return true
}

// names maps header names as they arrive to their canonical form, so that a name seen before
// costs no allocation. Reads take no lock (the map is replaced, never changed, when a name is
// added); it stops growing at a bound, so no peer can make it large.
var (
	names   atomic.Pointer[map[string]string]
	namesMu sync.Mutex
)

func canonicalName(b []byte) string {
	if m := names.Load(); m != nil {
		if s, ok := (*m)[string(b)]; ok {
			return s
		}
	}
	raw := string(b)
	s := textproto.CanonicalMIMEHeaderKey(raw)
	namesMu.Lock()
	defer namesMu.Unlock()
	old := names.Load()
	if old != nil && len(*old) >= 512 {
		return s
	}
	m := make(map[string]string, 1+lenOf(old))
	if old != nil {
		for k, v := range *old {
			m[k] = v
		}
	}
	m[raw] = s
	names.Store(&m)
	return s
}

func lenOf(m *map[string]string) int {
	if m == nil {
		return 0
	}
	return len(*m)
}

// parseLength accepts one length, or several copies of the same one (RFC 9110 8.6).
func parseLength(values []string) (int64, error) {
	var n int64 = -1
	for _, v := range values {
		if v == "" || v[0] < '0' || v[0] > '9' {
			return 0, ErrBadLength
		}
		m, err := strconv.ParseInt(v, 10, 64)
		if err != nil || (n >= 0 && m != n) {
			return 0, ErrBadLength
		}
		n = m
	}
	return n, nil
}

// isChunked reports whether a Transfer-Encoding header is exactly chunked, the only coding
// accepted.
func isChunked(te []string) bool {
	if len(te) != 1 || len(te[0]) != len("chunked") {
		return false
	}
	for i := 0; i < len(te[0]); i++ {
		if c := te[0][i] | 0x20; c != "chunked"[i] {
			return false
		}
	}
	return true
}

// chunkedEncoding is every chunked message's TransferEncoding, made once: nothing changes it.
var chunkedEncoding = []string{"chunked"}

// framedBody is the body framing of a message: n bytes, or chunked when n is -1.
func framedBody(br *bufio.Reader, n int64) io.ReadCloser {
	if n < 0 {
		return &chunkedBody{br: br, r: httputil.NewChunkedReader(br)}
	}
	if n == 0 {
		return http.NoBody
	}
	return &lengthBody{br: br, n: n}
}

// lengthBody is a body of n bytes; the connection ending earlier is io.ErrUnexpectedEOF.
type lengthBody struct {
	br *bufio.Reader
	n  int64
}

func (b *lengthBody) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.br.Read(p)
	b.n -= int64(n)
	if err == io.EOF && b.n > 0 {
		return n, io.ErrUnexpectedEOF // the connection ended before the body did
	}
	if err == nil && b.n == 0 {
		err = io.EOF
	}
	return n, err
}

func (b *lengthBody) Close() error { return nil }

// chunkedBody is a chunked body. After the last chunk it reads the trailer section, checked and
// bounded as a head is, and drops it, so that the connection is left at the start of the next
// message. A failure is kept: every later Read reports it again.
type chunkedBody struct {
	br  *bufio.Reader
	r   io.Reader
	err error // io.EOF once the body and its trailer are read
}

func (b *chunkedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.r.Read(p)
	if err == io.EOF {
		err = b.readTrailer()
	}
	b.err = err
	return n, err
}

// readTrailer reads the section after the last chunk: nearly always just its empty line.
func (b *chunkedBody) readTrailer() error {
	if end, _ := b.br.Peek(2); string(end) == "\r\n" {
		_, _ = b.br.Discard(2)
		return io.EOF
	}
	sc := getScratch()
	defer sc.release()
	if _, err := readHeader(b.br, sc); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	return io.EOF
}

func (b *chunkedBody) Close() error { return nil }

// trimSpace drops the spaces and tabs around a header value (RFC 9110 5.5): what
// bytes.Trim(b, " \t") does, without its general cutset handling, on every header line.
func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}
