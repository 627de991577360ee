package fakeazure

import (
	"crypto/tls"
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

// KeyVault speaks Key Vault's secrets REST protocol over TLS: the bearer challenge on a request
// without a token, GET /secrets/{name}/{version}?api-version=..., and the service's 401, 403 and
// 404 bodies. It checks each token's audience and lifetime (not its signature).
//
// The challenge names resource "https://0.0.1:PORT": the real azsecrets client accepts a
// challenge only for a resource whose host ends the vault's host (vault.azure.net for
// NAME.vault.azure.net), and on loopback that is the only such name.
type KeyVault struct {
	URL      string
	resource string
	srv      *httptest.Server

	mu        sync.Mutex
	secrets   map[string][]string // name -> versions' values, latest last
	reads     map[string]int
	down      bool
	forbidden bool
	dropped   int
}

// Dropped counts the requests refused while the vault was down.
func (kv *KeyVault) Dropped() int {
	kv.mu.Lock()
	defer kv.mu.Unlock()
	return kv.dropped
}

// NewKeyVault starts a vault whose certificate is issued by ca.
func NewKeyVault(t testing.TB, ca *CA) *KeyVault {
	certFile, keyFile := ca.Issue(t, "keyvault")
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	kv := &KeyVault{secrets: map[string][]string{}, reads: map[string]int{}}
	kv.srv = httptest.NewUnstartedServer(http.HandlerFunc(kv.serve))
	kv.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	kv.srv.StartTLS()
	t.Cleanup(kv.srv.Close)
	kv.URL = kv.srv.URL + "/"
	port := kv.srv.URL[strings.LastIndex(kv.srv.URL, ":")+1:]
	kv.resource = "https://0.0.1:" + port
	return kv
}

// SetSecret stores a new version of a secret.
func (kv *KeyVault) SetSecret(name, value string) {
	kv.mu.Lock()
	defer kv.mu.Unlock()
	kv.secrets[name] = append(kv.secrets[name], value)
}

// Reads counts the reads of a secret that were answered with its value.
func (kv *KeyVault) Reads(name string) int {
	kv.mu.Lock()
	defer kv.mu.Unlock()
	return kv.reads[name]
}

// SetDown makes the vault drop every connection, as an unreachable vault does.
func (kv *KeyVault) SetDown(down bool) {
	kv.mu.Lock()
	kv.down = down
	kv.mu.Unlock()
	if down {
		kv.srv.CloseClientConnections()
	}
}

// SetForbidden makes every read answer 403, as when the identity lacks Key Vault Secrets User.
func (kv *KeyVault) SetForbidden(f bool) {
	kv.mu.Lock()
	defer kv.mu.Unlock()
	kv.forbidden = f
}

func (kv *KeyVault) fail(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer authorization="https://login.microsoftonline.com/72f988bf-0000-4000-8000-000000000001", resource="%s"`, kv.resource))
	}
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"code": code, "message": msg}})
}

func (kv *KeyVault) serve(w http.ResponseWriter, r *http.Request) {
	kv.mu.Lock()
	down, forbidden := kv.down, kv.forbidden
	if down {
		kv.dropped++
	}
	kv.mu.Unlock()
	if down {
		if c, _, err := w.(http.Hijacker).Hijack(); err == nil {
			c.Close()
		}
		return
	}
	auth := r.Header.Get("Authorization")
	if auth == "" {
		kv.fail(w, http.StatusUnauthorized, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.")
		return
	}
	if err := kv.checkToken(strings.TrimPrefix(auth, "Bearer ")); err != "" {
		kv.fail(w, http.StatusUnauthorized, "Unauthorized", err)
		return
	}
	if r.URL.Query().Get("api-version") == "" {
		kv.fail(w, http.StatusBadRequest, "BadParameter", "The api-version query parameter is required.")
		return
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if r.Method != http.MethodGet || len(parts) < 2 || len(parts) > 3 || parts[0] != "secrets" {
		kv.fail(w, http.StatusNotFound, "NotFound", "The requested resource was not found.")
		return
	}
	if forbidden {
		kv.fail(w, http.StatusForbidden, "Forbidden", "Caller is not authorized to perform action on resource. Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'")
		return
	}
	name := parts[1]
	kv.mu.Lock()
	versions := kv.secrets[name]
	idx := len(versions) - 1
	if len(parts) == 3 && parts[2] != "" {
		idx = -1
		for i := range versions {
			if fmt.Sprintf("v%d", i+1) == parts[2] {
				idx = i
			}
		}
	}
	if idx < 0 {
		kv.mu.Unlock()
		kv.fail(w, http.StatusNotFound, "SecretNotFound", fmt.Sprintf("A secret with (name/id) %s was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command.", name))
		return
	}
	kv.reads[name]++
	value := versions[idx]
	kv.mu.Unlock()
	now := time.Now().Unix()
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	json.NewEncoder(w).Encode(map[string]any{
		"value": value, "id": fmt.Sprintf("%ssecrets/%s/v%d", kv.URL, name, idx+1),
		"attributes": map[string]any{"enabled": true, "created": now, "updated": now, "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90},
		"tags":       map[string]string{},
	})
}

// checkToken verifies the claims a vault checks, returning the service's message on failure.
func (kv *KeyVault) checkToken(tok string) string {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return "AKV10000: Request is missing a Bearer or PoP token."
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	var claims struct {
		Aud string `json:"aud"`
		Exp int64  `json:"exp"`
	}
	if err != nil || json.Unmarshal(payload, &claims) != nil {
		return "AKV10032: Invalid issuer."
	}
	if strings.TrimSuffix(claims.Aud, "/") != kv.resource {
		return "AKV10022: Invalid audience. Expected " + kv.resource + ", found: " + claims.Aud + "."
	}
	if claims.Exp < time.Now().Unix() {
		return "AKV10013: Token expired."
	}
	return ""
}
