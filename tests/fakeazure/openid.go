package fakeazure

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// OpenID is a tenant's OpenID configuration and signing keys, as Entra ID serves them, with a
// way to mint tokens signed by those keys (or by keys it does not publish yet).
type OpenID struct {
	Authority string // pass as clients.entra.authority
	Tenant    string
	Issuer    string

	srv       *httptest.Server
	mu        sync.Mutex
	keys      map[string]*rsa.PrivateKey // published, by kid
	jwksReads int
}

// NewOpenID starts the configuration endpoint with one published key, "key-1".
func NewOpenID(t testing.TB) *OpenID {
	o := &OpenID{Tenant: "11111111-2222-3333-4444-555555555555", keys: map[string]*rsa.PrivateKey{"key-1": NewKey(t)}}
	o.srv = httptest.NewUnstartedServer(http.HandlerFunc(o.serve))
	o.Authority = "http://" + o.srv.Listener.Addr().String()
	o.Issuer = o.Authority + "/" + o.Tenant + "/v2.0"
	o.srv.Start()
	t.Cleanup(o.srv.Close)
	return o
}

// NewKey makes an RSA signing key.
func NewKey(t testing.TB) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Publish adds a signing key under kid, as a key rollover does.
func (o *OpenID) Publish(kid string, k *rsa.PrivateKey) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.keys[kid] = k
}

// Key returns a published key.
func (o *OpenID) Key(kid string) *rsa.PrivateKey {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.keys[kid]
}

// JWKSReads counts how often the key set was fetched.
func (o *OpenID) JWKSReads() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.jwksReads
}

// Token signs claims with key under kid (RS256). Standard claims not given are filled in: a
// token valid for an hour from the tenant's issuer.
func (o *OpenID) Token(t testing.TB, kid string, key *rsa.PrivateKey, claims jwt.MapClaims) string {
	now := time.Now()
	full := jwt.MapClaims{"iss": o.Issuer, "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(), "azp": "caller-app", "tid": o.Tenant}
	for k, v := range claims {
		full[k] = v
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, full)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (o *OpenID) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch r.URL.Path {
	case "/" + o.Tenant + "/v2.0/.well-known/openid-configuration":
		json.NewEncoder(w).Encode(map[string]any{
			"issuer": o.Issuer, "jwks_uri": o.srv.URL + "/" + o.Tenant + "/discovery/v2.0/keys",
			"id_token_signing_alg_values_supported": []string{"RS256"},
		})
	case "/" + o.Tenant + "/discovery/v2.0/keys":
		o.mu.Lock()
		o.jwksReads++
		var keys []any
		for kid, k := range o.keys {
			keys = append(keys, map[string]any{
				"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
				"n": base64.RawURLEncoding.EncodeToString(k.N.Bytes()),
				"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(k.E)).Bytes()),
			})
		}
		o.mu.Unlock()
		json.NewEncoder(w).Encode(map[string]any{"keys": keys})
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}
