// Package fakeazure holds protocol-faithful fakes of Azure services that have no emulator, for
// the tests: the App Service / Functions managed identity endpoint, and a test CA for TLS.
package fakeazure

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// Identity serves the managed identity protocol that App Service and Functions give a process
// through IDENTITY_ENDPOINT and IDENTITY_HEADER (api-version 2019-08-01), so the real azidentity
// code runs. Its tokens are JWTs with the resource as audience and an Entra issuer; they are
// not signed by anyone a real service would trust.
type Identity struct {
	// Header is the secret the caller must send as X-IDENTITY-HEADER.
	Header string
	Tenant string
	// Lifetime of the tokens it issues.
	Lifetime time.Duration

	srv       *httptest.Server
	mu        sync.Mutex
	requests  map[string]int
	issued    []string
	clientIDs map[string]bool
}

// ClientIDs returns the user-assigned identities tokens were asked for ("" for the system one).
func (id *Identity) ClientIDs() map[string]bool {
	id.mu.Lock()
	defer id.mu.Unlock()
	out := map[string]bool{}
	for k := range id.clientIDs {
		out[k] = true
	}
	return out
}

// NewIdentity starts the endpoint on loopback HTTP, as the platform does.
func NewIdentity(t testing.TB) *Identity {
	id := &Identity{Header: "fake-identity-header-" + randomHex(8), Tenant: "72f988bf-0000-4000-8000-000000000001", Lifetime: time.Hour, requests: map[string]int{}}
	id.srv = httptest.NewServer(http.HandlerFunc(id.serve))
	t.Cleanup(id.srv.Close)
	return id
}

// Env is what the platform sets for the process.
func (id *Identity) Env() map[string]string {
	return map[string]string{"IDENTITY_ENDPOINT": id.srv.URL + "/msi/token", "IDENTITY_HEADER": id.Header}
}

// Requests counts the token requests for a resource.
func (id *Identity) Requests(resource string) int {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.requests[resource]
}

// Issued returns every token handed out, for checking that none is ever logged.
func (id *Identity) Issued() []string {
	id.mu.Lock()
	defer id.mu.Unlock()
	return append([]string(nil), id.issued...)
}

func (id *Identity) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	q := r.URL.Query()
	switch {
	case r.URL.Path != "/msi/token" || r.Method != http.MethodGet:
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"error":"not_found","error_description":"no such endpoint"}`)
		return
	case r.Header.Get("X-IDENTITY-HEADER") != id.Header:
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"statusCode":401,"message":"Unauthorized request"}`)
		return
	case q.Get("api-version") != "2019-08-01":
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"statusCode":400,"message":"Unsupported api-version %q"}`, q.Get("api-version"))
		return
	case q.Get("resource") == "":
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"statusCode":400,"message":"resource is required"}`)
		return
	}
	resource := q.Get("resource")
	now := time.Now()
	claims := map[string]any{
		"aud": resource, "iss": "https://sts.windows.net/" + id.Tenant + "/", "tid": id.Tenant,
		"iat": now.Unix(), "nbf": now.Add(-time.Minute).Unix(), "exp": now.Add(id.Lifetime).Unix(),
		"oid": "00000000-0000-0000-0000-00000000a11d", "xms_mirid": "/subscriptions/x/resourcegroups/y/providers/Microsoft.Web/sites/gateway",
	}
	if cid := q.Get("client_id"); cid != "" {
		claims["appid"] = cid
	}
	token := unsignedJWT(claims)
	id.mu.Lock()
	id.requests[resource]++
	if id.clientIDs == nil {
		id.clientIDs = map[string]bool{}
	}
	id.clientIDs[q.Get("client_id")] = true
	id.issued = append(id.issued, token)
	id.mu.Unlock()
	json.NewEncoder(w).Encode(map[string]string{
		"access_token": token, "expires_on": fmt.Sprint(now.Add(id.Lifetime).Unix()),
		"resource": resource, "token_type": "Bearer", "client_id": q.Get("client_id"),
	})
}

func unsignedJWT(claims map[string]any) string {
	enc := base64.RawURLEncoding
	head, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": "fake"})
	body, _ := json.Marshal(claims)
	sig := make([]byte, 64)
	rand.Read(sig)
	return strings.Join([]string{enc.EncodeToString(head), enc.EncodeToString(body), enc.EncodeToString(sig)}, ".")
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return fmt.Sprintf("%x", b)
}
