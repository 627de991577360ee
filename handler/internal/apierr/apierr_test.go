package apierr

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestWriteIsAzureShaped(t *testing.T) {
	e := New(http.StatusTooManyRequests, "AllTargetsThrottled", `every target is "busy"`).With("Retry-After", "3")
	e.Details = []Detail{{Target: "a/b", Outcome: "throttled", Status: 429}}
	rec := httptest.NewRecorder()
	e.Write(rec)
	if rec.Code != 429 || rec.Header().Get("Content-Type") != "application/json" || rec.Header().Get("Retry-After") != "3" ||
		rec.Header().Get("X-Served-By") != "none" || rec.Header().Get("X-Gateway-Attempts") != "0" {
		t.Fatalf("status %d, headers %v", rec.Code, rec.Header())
	}
	var got struct {
		Error struct {
			Code, Message string
			Details       []Detail
		}
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.Error.Code != "AllTargetsThrottled" || got.Error.Message != `every target is "busy"` || len(got.Error.Details) != 1 || got.Error.Details[0].Target != "a/b" {
		t.Fatalf("body %s", rec.Body)
	}
	if rec.Header().Get("Content-Length") != "" && rec.Body.Len() != len(e.JSON()) {
		t.Fatal("content length")
	}
}

func TestWriteKeepsServedBy(t *testing.T) {
	rec := httptest.NewRecorder()
	rec.Header().Set("X-Served-By", "swc/micro")
	rec.Header().Set("X-Gateway-Attempts", "2")
	New(502, "AllTargetsFailed", "x").Write(rec)
	if rec.Header().Get("X-Served-By") != "swc/micro" || rec.Header().Get("X-Gateway-Attempts") != "2" {
		t.Fatal(rec.Header())
	}
}

func TestEventAndError(t *testing.T) {
	e := New(502, "StreamInterrupted", "cut")
	ev := string(e.Event())
	if !strings.HasPrefix(ev, `data: {"error":{"code":"StreamInterrupted"`) || !strings.HasSuffix(ev, "\n\n") {
		t.Fatalf("%q", ev)
	}
	if e.Error() != "502 StreamInterrupted: cut" {
		t.Fatal(e.Error())
	}
	if strings.Contains(string(New(400, "x", "y").JSON()), "details") {
		t.Fatal("empty details are written")
	}
}
