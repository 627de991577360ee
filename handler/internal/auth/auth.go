// Package auth decides whether a caller may use the gateway: the Front Door lock-down and
// caller authentication.
package auth

import (
	"crypto/subtle"
	"net/http"
	"strings"
)

// Rejection is why a request was refused, in the Azure error shape's terms.
type Rejection struct {
	Status  int
	Code    string
	Message string
	// Challenge is the WWW-Authenticate value for a 401.
	Challenge string
}

// FrontDoor refuses requests that did not come through this gateway's Front Door profile.
type FrontDoor struct {
	ID string // empty: no check
}

// Check returns nil when the request may proceed.
func (f FrontDoor) Check(r *http.Request) *Rejection {
	if f.ID == "" {
		return nil
	}
	got := r.Header.Get("X-Azure-Fdid")
	if subtle.ConstantTimeCompare([]byte(got), []byte(f.ID)) == 1 {
		return nil
	}
	return &Rejection{Status: http.StatusForbidden, Code: "Forbidden", Message: "requests must come through the gateway's Azure Front Door endpoint"}
}

// Callers authenticates callers: with Anonymous every caller is "anonymous"; with Keys, a
// client key in the api-key header names the caller's app; with Entra, a bearer token does.
type Callers struct {
	Anonymous bool
	Keys      *ClientKeys
	Entra     *Entra
}

// Authenticate returns the caller's app name, or a rejection that says no more than "invalid".
func (c Callers) Authenticate(r *http.Request) (string, *Rejection) {
	if c.Anonymous {
		return "anonymous", nil
	}
	if token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && c.Entra != nil {
		if app, err := c.Entra.Verify(r.Context(), strings.TrimSpace(token)); err == nil {
			return app, nil
		}
		return "", &Rejection{Status: http.StatusUnauthorized, Code: "401", Message: "Access denied due to an invalid bearer token.", Challenge: `Bearer realm="aoai-gateway", error="invalid_token"`}
	}
	if c.Keys != nil {
		if app, ok := c.Keys.Check(r); ok {
			return app, nil
		}
		msg := "Access denied due to a missing api-key header."
		if r.Header.Get("Api-Key") != "" {
			msg = "Access denied due to an invalid api-key."
		}
		return "", &Rejection{Status: http.StatusUnauthorized, Code: "401", Message: msg, Challenge: `Bearer realm="aoai-gateway", error="invalid_token"`}
	}
	return "", &Rejection{Status: http.StatusUnauthorized, Code: "401", Message: "Access denied: the request has no valid credential for this gateway.", Challenge: `Bearer realm="aoai-gateway"`}
}
