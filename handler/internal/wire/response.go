package wire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"

	"golang.org/x/net/http/httpguts"
)

// ReadResponse reads the response to req from br: its head, and a body reader framed by it.
// Informational (1xx) answers before it are skipped.
func ReadResponse(br *bufio.Reader, req *http.Request) (*http.Response, error) {
	sc := getScratch()
	defer sc.release()
	for informational := 0; ; informational++ {
		resp, err := readStatus(br, req, sc)
		if err != nil {
			return nil, err
		}
		if resp.Header, err = readHeader(br, sc); err != nil {
			return nil, err
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, frameResponse(resp, br, req)
		}
		if informational == 5 {
			return nil, errors.New("too many informational responses")
		}
	}
}

func readStatus(br *bufio.Reader, req *http.Request, sc *scratch) (*http.Response, error) {
	line, err := readLine(br, sc)
	if err != nil {
		return nil, err
	}
	// "HTTP/1.1 200 OK": version, a space, three digits, and a reason after a space if any.
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || (line[7] != '0' && line[7] != '1') ||
		line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return nil, ErrMalformed
	}
	code := 0
	for _, d := range line[9:12] {
		if d < '0' || d > '9' {
			return nil, ErrMalformed
		}
		code = code*10 + int(d-'0')
	}
	if code < 100 {
		return nil, ErrMalformed
	}
	resp := &http.Response{StatusCode: code, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Request: req}
	if line[7] == '0' {
		resp.Proto, resp.ProtoMinor = "HTTP/1.0", 0
	}
	if status := line[9:]; string(status) == StatusLine(code) {
		resp.Status = StatusLine(code) // the usual wording, made once
	} else {
		resp.Status = string(status)
	}
	return resp, nil
}

// statusLines are "429 Too Many Requests" and the like, made once: a throttled region answers
// hundreds of 429s a second, and the gateway its own.
var statusLines = func() (lines [600]string) {
	for code := range lines {
		if text := http.StatusText(code); text != "" {
			lines[code] = strconv.Itoa(code) + " " + text
		}
	}
	return lines
}()

// StatusLine is the status code and its reason phrase, "200 OK" for 200; a code without one
// gets "status code N".
func StatusLine(code int) string {
	if code >= 0 && code < len(statusLines) && statusLines[code] != "" {
		return statusLines[code]
	}
	return strconv.Itoa(code) + " status code " + strconv.Itoa(code)
}

// frameResponse sets the body reader (RFC 9112 6.3).
func frameResponse(resp *http.Response, br *bufio.Reader, req *http.Request) error {
	h := resp.Header
	resp.Close = httpguts.HeaderValuesContainsToken(h["Connection"], "close") ||
		resp.ProtoMinor == 0 && !httpguts.HeaderValuesContainsToken(h["Connection"], "keep-alive")
	code := resp.StatusCode
	if req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified || code < 200 {
		resp.ContentLength, resp.Body = 0, http.NoBody
		if code == http.StatusSwitchingProtocols {
			resp.Close = true // the connection speaks another protocol now: never reused
		}
		if cl, ok := h["Content-Length"]; ok && req.Method == http.MethodHead {
			if n, err := parseLength(cl); err == nil {
				resp.ContentLength = n
			}
		}
		return nil
	}
	if te, ok := h["Transfer-Encoding"]; ok {
		if !isChunked(te) {
			return ErrBadEncoding
		}
		// Chunked framing wins over a length (RFC 9112 6.3), which is dropped. In an HTTP/1.0
		// message the framing is suspect (RFC 9112 6.1): read it, then close the connection.
		resp.Close = resp.Close || resp.ProtoMinor == 0
		delete(h, "Transfer-Encoding")
		delete(h, "Content-Length")
		resp.TransferEncoding, resp.ContentLength = chunkedEncoding, -1
		resp.Body = framedBody(br, -1)
		return nil
	}
	if cl, ok := h["Content-Length"]; ok {
		n, err := parseLength(cl)
		if err != nil {
			return err
		}
		resp.ContentLength, resp.Body = n, framedBody(br, n)
		return nil
	}
	// No length: the body runs to the end of the connection, which then cannot be reused.
	resp.ContentLength, resp.Close = -1, true
	resp.Body = io.NopCloser(br)
	return nil
}
