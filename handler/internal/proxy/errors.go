package proxy

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// WriteError writes an error the gateway itself produces, in Azure OpenAI's shape so that SDKs
// surface it: {"error":{"code":"...","message":"..."}}.
func WriteError(w http.ResponseWriter, status int, code, message string) {
	writeErrorDetails(w, status, code, message, nil)
}

// errorBody is the Azure OpenAI error shape, with the gateway's details where it has some.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Details names each target and what became of it, for the all-failed responses.
	Details []attemptDetail `json:"details,omitempty"`
}

type attemptDetail struct {
	Target     string `json:"target"`
	Outcome    string `json:"outcome"`
	Status     int    `json:"status,omitempty"`
	Reason     string `json:"reason,omitempty"`
	FreeAt     string `json:"freeAt,omitempty"`
	RetryAfter string `json:"retryAfter,omitempty"`
}

func writeErrorDetails(w http.ResponseWriter, status int, code, message string, details []attemptDetail) {
	b, _ := json.Marshal(errorBody{Error: errorDetail{Code: code, Message: message, Details: details}})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("X-Content-Type-Options", "nosniff")
	if h.Get(headerServedBy) == "" {
		h.Set(headerServedBy, "none")
	}
	if h.Get(headerAttempts) == "" {
		h.Set(headerAttempts, "0")
	}
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
