package auth

import (
	"net/http/httptest"
	"strings"
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

type staticKeys map[string]string

func (s staticKeys) Key(name string) (string, bool) { v, ok := s[name]; return v, ok }

// TestClientKeyPlaces: a client key is accepted in the api-key header and as a bearer token
// that is not a JWT (the plain OpenAI client on /openai/v1/ sends it so); a JWT is never taken
// for a key, and a wrong or missing key is refused alike.
func TestClientKeyPlaces(t *testing.T) {
	keys := &ClientKeys{Source: staticKeys{"clients": `{"app-a":"key-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}`}, Secret: "clients"}
	c := Callers{Keys: keys}
	jwt := "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ4In0.c2ln"
	for _, tc := range []struct {
		name, apiKey, auth, app string
	}{
		{"api-key header", "key-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "", "app-a"},
		{"bearer key", "", "Bearer key-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "app-a"},
		{"api-key wins over a bearer", "key-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "Bearer wrong", "app-a"},
		{"wrong bearer key", "", "Bearer key-b", ""},
		{"JWT is not a key", "", "Bearer " + jwt, ""},
		{"JWT beside a valid api-key, no Entra", "key-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "Bearer " + jwt, "app-a"},
		{"nothing", "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/openai/v1/chat/completions", nil)
			if tc.apiKey != "" {
				r.Header.Set("Api-Key", tc.apiKey)
			}
			if tc.auth != "" {
				r.Header.Set("Authorization", tc.auth)
			}
			app, rej := c.Authenticate(r)
			if app != tc.app || (tc.app == "") != (rej != nil) {
				t.Fatalf("app %q, rejection %v", app, rej)
			}
			if rej != nil && (rej.Status != 401 || strings.Contains(rej.Message, "key-")) {
				t.Fatalf("rejection %+v", rej)
			}
		})
	}
	if !isJWT(jwt) || isJWT("key-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa") || isJWT("a.b.c") {
		t.Error("isJWT")
	}
}
