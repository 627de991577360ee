package app

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aoai-failover/gateway/handler/internal/config"
)

func TestCORS(t *testing.T) {
	c := newCORS(&config.CORS{AllowedOrigins: []string{"https://app.contoso.com"}, MaxAge: config.Duration(10 * time.Minute)})
	preflight := func(c *cors, origin, headers string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodOptions, "/openai/v1/chat/completions", nil)
		r.Header.Set("Origin", origin)
		r.Header.Set("Access-Control-Request-Method", "POST")
		r.Header.Set("Access-Control-Request-Headers", headers)
		w := httptest.NewRecorder()
		if !c.preflight(w, r) {
			t.Fatal("a preflight was not answered")
		}
		return w
	}
	w := preflight(c, "https://app.contoso.com", "api-key, content-type, x-evil\r\nInjected: 1")
	h := w.Header()
	if w.Code != 204 || h.Get("Access-Control-Allow-Origin") != "https://app.contoso.com" || h.Get("Access-Control-Max-Age") != "600" ||
		h.Get("Access-Control-Allow-Headers") != "api-key, content-type" || !strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") {
		t.Fatalf("allowed origin: %d %v", w.Code, h)
	}
	w = preflight(c, "https://evil.example", "api-key")
	if w.Code != 403 || w.Header().Get("Access-Control-Allow-Origin") != "" || !strings.Contains(w.Body.String(), "OriginNotAllowed") {
		t.Fatalf("other origin: %d %v %s", w.Code, w.Header(), w.Body)
	}
	w = preflight(nil, "https://app.contoso.com", "api-key")
	if w.Code != 403 {
		t.Fatalf("no CORS configured: %d", w.Code)
	}
	// Not a preflight: left to the gateway.
	if c.preflight(httptest.NewRecorder(), httptest.NewRequest(http.MethodOptions, "/x", nil)) {
		t.Fatal("an OPTIONS without Origin was taken for a preflight")
	}
	// An actual request from an allowed origin may read the gateway's headers.
	r := httptest.NewRequest(http.MethodPost, "/openai/v1/chat/completions", nil)
	r.Header.Set("Origin", "https://app.contoso.com")
	rec := httptest.NewRecorder()
	c.mark(rec, r)
	if rec.Header().Get("Access-Control-Allow-Origin") != "https://app.contoso.com" || !strings.Contains(rec.Header().Get("Access-Control-Expose-Headers"), "X-Served-By") {
		t.Fatalf("%v", rec.Header())
	}
	r.Header.Set("Origin", "https://evil.example")
	rec = httptest.NewRecorder()
	c.mark(rec, r)
	if rec.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("an unlisted origin was marked")
	}
}
