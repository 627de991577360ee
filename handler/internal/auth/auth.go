// Package auth decides whether a caller may use the gateway: the Front Door lock-down and
// caller authentication.
package auth

import (
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/aoai-failover/gateway/handler/internal/apierr"
)

// FrontDoor refuses requests that did not come through this gateway's Front Door profile.
type FrontDoor struct {
	ID string // empty: no check
}

// Check returns nil when the request may proceed.
func (f FrontDoor) Check(r *http.Request) *apierr.Error {
	if f.ID == "" {
		return nil
	}
	got := r.Header.Get("X-Azure-Fdid")
	if subtle.ConstantTimeCompare([]byte(got), []byte(f.ID)) == 1 {
		return nil
	}
	return apierr.New(http.StatusForbidden, "Forbidden", "requests must come through the gateway's Azure Front Door endpoint")
}

// Callers authenticates callers: with Anonymous every caller is "anonymous"; with Keys, a client
// key names the caller's app, in the api-key header or as a bearer token that is not a JWT (what
// the plain OpenAI client sends to /openai/v1/); with Entra, a bearer token that is a JWT does.
type Callers struct {
	Anonymous bool
	Keys      *ClientKeys
	Entra     *Entra
}

var (
	invalidKey    = `Bearer realm="aoai-gateway", error="invalid_token"`
	noCredentials = `Bearer realm="aoai-gateway"`
)

// Authenticate returns the caller's app name, or a rejection that says no more than "invalid".
func (c Callers) Authenticate(r *http.Request) (string, *apierr.Error) {
	if c.Anonymous {
		return "anonymous", nil
	}
	bearer, hasBearer := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	bearer = strings.TrimSpace(bearer)
	jwt := hasBearer && isJWT(bearer)
	if jwt && c.Entra != nil {
		if app, err := c.Entra.Verify(r.Context(), bearer); err == nil {
			return app, nil
		}
		return "", apierr.New(http.StatusUnauthorized, "401", "Access denied due to an invalid bearer token.").With("WWW-Authenticate", invalidKey)
	}
	if c.Keys != nil {
		key := r.Header.Get("Api-Key")
		if key == "" && hasBearer && !jwt {
			key = bearer
		}
		if app, ok := c.Keys.Check(key); ok {
			return app, nil
		}
		msg := "Access denied due to a missing api-key header."
		if key != "" {
			msg = "Access denied due to an invalid api-key."
		}
		return "", apierr.New(http.StatusUnauthorized, "401", msg).With("WWW-Authenticate", invalidKey)
	}
	return "", apierr.New(http.StatusUnauthorized, "401", "Access denied: the request has no valid credential for this gateway.").With("WWW-Authenticate", noCredentials)
}

// isJWT: three base64url segments, the first a JSON header naming an algorithm. A client key
// is never one (Azure-style keys are 32 or 84 characters without dots).
func isJWT(token string) bool {
	head, rest, ok := strings.Cut(token, ".")
	if !ok || strings.Count(rest, ".") != 1 {
		return false
	}
	b, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return false
	}
	var h struct {
		Alg string `json:"alg"`
	}
	return json.Unmarshal(b, &h) == nil && h.Alg != ""
}
