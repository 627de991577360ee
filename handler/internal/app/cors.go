package app

import (
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/aoai-failover/gateway/handler/internal/apierr"
	"github.com/aoai-failover/gateway/handler/internal/config"
)

// cors lets browser apps on the routing document's named origins call the gateway: it answers
// their preflight requests itself (without credentials, as browsers send them) and marks the
// answers to allowed origins. A nil cors allows no origin.
type cors struct {
	origins []string
	any     bool
	maxAge  string
}

func newCORS(c *config.CORS) *cors {
	if c == nil {
		return nil
	}
	return &cors{origins: c.AllowedOrigins, any: slices.Contains(c.AllowedOrigins, "*"),
		maxAge: strconv.Itoa(int(c.MaxAge.D().Seconds()))}
}

func (c *cors) allowed(origin string) bool {
	return c != nil && origin != "" && (c.any || slices.Contains(c.origins, origin))
}

// exposed are the answer's headers a browser app may read: who served it, and the waits.
const exposed = "X-Served-By, X-Gateway-Attempts, Retry-After, Retry-After-Ms, X-Ratelimit-Remaining-Requests, X-Ratelimit-Remaining-Tokens, Apim-Request-Id, X-Request-Id"

// preflight answers a CORS preflight request and reports whether it did.
func (c *cors) preflight(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if r.Method != http.MethodOptions || origin == "" || r.Header.Get("Access-Control-Request-Method") == "" {
		return false
	}
	h := w.Header()
	h.Add("Vary", "Origin")
	if !c.allowed(origin) {
		apierr.New(http.StatusForbidden, "OriginNotAllowed",
			"this origin may not call the gateway from a browser; the routing document's cors.allowedOrigins names those that may").Write(w)
		return true
	}
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")
	if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
		h.Set("Access-Control-Allow-Headers", sanitizeHeaderList(req))
	}
	h.Set("Access-Control-Max-Age", c.maxAge)
	h.Set("X-Served-By", "none")
	h.Set("X-Gateway-Attempts", "0")
	w.WriteHeader(http.StatusNoContent)
	return true
}

// mark sets the CORS headers of an answer to an allowed origin.
func (c *cors) mark(w http.ResponseWriter, r *http.Request) {
	origin := r.Header.Get("Origin")
	if !c.allowed(origin) {
		return
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Add("Vary", "Origin")
	h.Set("Access-Control-Expose-Headers", exposed)
}

// sanitizeHeaderList keeps the header names of a request's list (tokens only), so nothing else
// is echoed back.
func sanitizeHeaderList(list string) string {
	var out []string
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		if f != "" && !strings.ContainsFunc(f, func(r rune) bool {
			return !(r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
		}) {
			out = append(out, f)
		}
	}
	return strings.Join(out, ", ")
}
