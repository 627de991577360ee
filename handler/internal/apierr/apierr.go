// Package apierr is the one error type of the gateway's own answers: a status, a code, a
// message and optional details, written in Azure OpenAI's error shape
// ({"error":{"code":"...","message":"..."}}) with a JSON content type, so that SDKs surface it.
package apierr

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// Error is an answer the gateway makes itself instead of forwarding one.
type Error struct {
	Status  int
	Code    string
	Message string
	// Details, when set, name each target and what became of it.
	Details []Detail
	// Header holds headers the answer needs besides the shape's (WWW-Authenticate, Allow,
	// Retry-After).
	Header http.Header
}

// Detail is one target's part in an answer that no target gave.
type Detail struct {
	Target     string `json:"target"`
	Outcome    string `json:"outcome"`
	Status     int    `json:"status,omitempty"`
	Reason     string `json:"reason,omitempty"`
	FreeAt     string `json:"freeAt,omitempty"`
	RetryAfter string `json:"retryAfter,omitempty"`
}

// New returns an Error without details.
func New(status int, code, message string) *Error {
	return &Error{Status: status, Code: code, Message: message}
}

func (e *Error) Error() string {
	return strconv.Itoa(e.Status) + " " + e.Code + ": " + e.Message
}

// With adds a header to the answer and returns e.
func (e *Error) With(name, value string) *Error {
	if e.Header == nil {
		e.Header = http.Header{}
	}
	e.Header.Set(name, value)
	return e
}

type body struct {
	Error struct {
		Code    string   `json:"code"`
		Message string   `json:"message"`
		Details []Detail `json:"details,omitempty"`
	} `json:"error"`
}

// JSON is the answer's body.
func (e *Error) JSON() []byte {
	var b body
	b.Error.Code, b.Error.Message, b.Error.Details = e.Code, e.Message, e.Details
	out, _ := json.Marshal(b) // strings and ints only: it cannot fail
	return out
}

// Event is the error as a server-sent event, for a stream that cannot go on.
func (e *Error) Event() []byte {
	b := e.JSON()
	out := make([]byte, 0, len(b)+8)
	out = append(out, "data: "...)
	out = append(out, b...)
	return append(out, "\n\n"...)
}

// Write sends the answer. The gateway's X-Served-By and X-Gateway-Attempts headers say none
// and 0 unless the caller of Write set them already.
func (e *Error) Write(w http.ResponseWriter) {
	b := e.JSON()
	h := w.Header()
	for k, vv := range e.Header {
		h[k] = vv
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("X-Content-Type-Options", "nosniff")
	if h.Get("X-Served-By") == "" {
		h.Set("X-Served-By", "none")
	}
	if h.Get("X-Gateway-Attempts") == "" {
		h.Set("X-Gateway-Attempts", "0")
	}
	w.WriteHeader(e.Status)
	_, _ = w.Write(b)
}
