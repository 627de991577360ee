package app

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/aoai-failover/gateway/handler/internal/telemetry"
)

func TestRecoveredPanicIsA500AndALogLine(t *testing.T) {
	var out, errs bytes.Buffer
	g := &gateway{log: telemetry.NewLogger(&out, &errs, 0)}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer g.recoverPanic(w, r)
		var m map[string]int
		m["boom"]++ // a bug: assignment to a nil map
	})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/openai/deployments/x/chat/completions", nil))
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if rec.Code != 500 || json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error.Code != "InternalServerError" {
		t.Errorf("got %d %s", rec.Code, rec.Body.String())
	}
	if !strings.Contains(errs.String(), `"msg":"panic serving request"`) || !strings.Contains(errs.String(), "assignment to entry in nil map") {
		t.Errorf("no error log line: %q", errs.String())
	}

	// The forwarder's deliberate abort of a committed response passes through untouched.
	defer func() {
		if v := recover(); v != http.ErrAbortHandler {
			t.Errorf("abort not passed on: %v", v)
		}
	}()
	h2 := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer g.recoverPanic(w, r)
		panic(http.ErrAbortHandler)
	})
	h2.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
}
