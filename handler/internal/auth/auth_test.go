package auth

import (
	"net/http/httptest"
	"testing"
)

func TestFrontDoor(t *testing.T) {
	f := FrontDoor{ID: "5c2bb0e0-6d48-4d4c-9b55-6f0b1b6a1c11"}
	for _, tc := range []struct {
		header string
		ok     bool
	}{{"5c2bb0e0-6d48-4d4c-9b55-6f0b1b6a1c11", true}, {"", false}, {"5c2bb0e0-6d48-4d4c-9b55-6f0b1b6a1c1", false}, {"other", false}} {
		r := httptest.NewRequest("POST", "/openai/v1/chat/completions", nil)
		if tc.header != "" {
			r.Header.Set("X-Azure-FDID", tc.header)
		}
		rej := f.Check(r)
		if (rej == nil) != tc.ok || (rej != nil && rej.Status != 403) {
			t.Errorf("%q: %+v", tc.header, rej)
		}
	}
	if (FrontDoor{}).Check(httptest.NewRequest("GET", "/", nil)) != nil {
		t.Error("no id configured must not refuse")
	}
}

func TestCallers(t *testing.T) {
	if app, rej := (Callers{Anonymous: true}).Authenticate(httptest.NewRequest("GET", "/status", nil)); rej != nil || app != "anonymous" {
		t.Errorf("anonymous: %q %+v", app, rej)
	}
	_, rej := (Callers{}).Authenticate(httptest.NewRequest("GET", "/status", nil))
	if rej == nil || rej.Status != 401 || rej.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("no method configured: %+v", rej)
	}
}
