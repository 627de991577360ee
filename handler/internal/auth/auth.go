// Package auth decides whether a caller may use the gateway: the Front Door lock-down and
// caller authentication.
package auth

import (
	"crypto/subtle"
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

// Callers authenticates callers: with Anonymous every caller is "anonymous"; with Keys, a
// client key in the api-key header names the caller's app; with Entra, a bearer token does.
type Callers struct {
	Anonymous bool
	Keys      *ClientKeys
	Entra     *Entra
}

// Authenticate returns the caller's app name, or a rejection that says no more than "invalid".
func (c Callers) Authenticate(r *http.Request) (string, *apierr.Error) {
	if c.Anonymous {
		return "anonymous", nil
	}
	if token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && c.Entra != nil {
		if app, err := c.Entra.Verify(r.Context(), strings.TrimSpace(token)); err == nil {
			return app, nil
		}
		return "", apierr.New(http.StatusUnauthorized, "401", "Access denied due to an invalid bearer token.").With("WWW-Authenticate", `Bearer realm="aoai-gateway", error="invalid_token"`)
	}
	if c.Keys != nil {
		if app, ok := c.Keys.Check(r); ok {
			return app, nil
		}
		msg := "Access denied due to a missing api-key header."
		if r.Header.Get("Api-Key") != "" {
			msg = "Access denied due to an invalid api-key."
		}
		return "", apierr.New(http.StatusUnauthorized, "401", msg).With("WWW-Authenticate", `Bearer realm="aoai-gateway", error="invalid_token"`)
	}
	return "", apierr.New(http.StatusUnauthorized, "401", "Access denied: the request has no valid credential for this gateway.").With("WWW-Authenticate", `Bearer realm="aoai-gateway"`)
}
