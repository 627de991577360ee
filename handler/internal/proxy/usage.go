package proxy

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"io"
	"net/http"
	"strings"

	"github.com/andybalholm/brotli"
)

// tailBytes is how much of the end of a decoded answer is kept to find its usage object: it is
// the last field but a few (Responses puts "user" and "metadata" after it).
const tailBytes = 64 << 10

// usageTap finds a plain answer's token usage from the bytes that go to the caller, whatever
// their content encoding (gzip, deflate, br: the SDKs ask for compression and backends give
// it), without changing them. It keeps only the tail of the decoded body; an encoded body is
// decoded on a goroutine of its own as its bytes pass.
type usageTap struct {
	tail   []byte
	ignore bool           // an encoding the gateway cannot read
	pw     *io.PipeWriter // nil for an identity body
	done   chan struct{}
}

// decoder returns the reader for a Content-Encoding: nil for identity, false for an encoding
// the gateway cannot read.
func decoder(encoding string) (func(io.Reader) (io.Reader, error), bool) {
	switch strings.ToLower(strings.TrimSpace(encoding)) {
	case "", "identity":
		return nil, true
	case "gzip", "x-gzip":
		return func(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) }, true
	case "deflate":
		return deflateReader, true
	case "br":
		return func(r io.Reader) (io.Reader, error) { return brotli.NewReader(r), nil }, true
	}
	return nil, false
}

// usageOf finds the usage of a whole body in the given encoding.
func usageOf(encoding string, body []byte) (Usage, bool) {
	dec, ok := decoder(encoding)
	if !ok {
		return Usage{}, false
	}
	if dec == nil {
		return findUsage(body)
	}
	t := &usageTap{}
	if d, err := dec(bytes.NewReader(body)); err == nil {
		_, _ = io.Copy(tailWriter{t}, d)
	}
	return findUsage(t.tail)
}

// newUsageTap returns a tap for a body in the given Content-Encoding; for an encoding it cannot
// read, a tap that finds nothing.
func newUsageTap(encoding string) *usageTap {
	t := &usageTap{}
	dec, ok := decoder(encoding)
	if !ok {
		t.ignore = true
		return t
	}
	if dec == nil {
		return t
	}
	pr, pw := io.Pipe()
	t.pw, t.done = pw, make(chan struct{})
	go func() {
		defer close(t.done)
		if d, err := dec(pr); err == nil {
			_, _ = io.Copy(tailWriter{t}, d)
		}
		pr.CloseWithError(io.ErrClosedPipe) // a body it could not read stops the writer too
	}()
	return t
}

// deflateReader reads HTTP's "deflate", which is zlib (RFC 9110 8.4.1.2); a raw deflate stream,
// which some servers send instead, is read as that.
func deflateReader(r io.Reader) (io.Reader, error) {
	br := bufio.NewReader(r)
	head, _ := br.Peek(2)
	if len(head) == 2 && head[0]&0x0f == 8 && (uint16(head[0])<<8|uint16(head[1]))%31 == 0 {
		return zlib.NewReader(br)
	}
	return flate.NewReader(br), nil
}

type tailWriter struct{ t *usageTap }

func (w tailWriter) Write(p []byte) (int, error) {
	w.t.keep(p)
	return len(p), nil
}

func (t *usageTap) keep(p []byte) {
	if len(p) >= tailBytes {
		t.tail = append(t.tail[:0], p[len(p)-tailBytes:]...)
		return
	}
	if over := len(t.tail) + len(p) - tailBytes; over > 0 {
		t.tail = t.tail[:copy(t.tail, t.tail[over:])]
	}
	t.tail = append(t.tail, p...)
}

// Write passes the next bytes of the body as the caller gets them.
func (t *usageTap) Write(p []byte) {
	if t.ignore {
		return
	}
	if t.pw == nil {
		t.keep(p)
		return
	}
	_, _ = t.pw.Write(p) // fails only once the decoder gave up: nothing more to learn
}

// usage ends the tap and returns the usage at the end of the body, if it reported one.
func (t *usageTap) usage() (Usage, bool) {
	t.close()
	return findUsage(t.tail)
}

// close ends the tap's decoder, if any; the tap keeps what it has.
func (t *usageTap) close() {
	if t.pw != nil {
		t.pw.Close()
		<-t.done
		t.pw = nil
	}
}

func contentEncoding(h http.Header) string { return headerValue(h, "Content-Encoding") }
