// Package secrets provides the credentials the gateway presents to Azure OpenAI accounts.
package secrets

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/aoai-failover/gateway/handler/internal/config"
)

// EnvKeys holds API keys read from environment variables at start (accounts whose auth is
// keyEnv). It is meant for local runs; production keys come from Key Vault.
type EnvKeys struct {
	keys map[string]string // account -> key; secret, never logged
}

// NewEnvKeys reads the key of every keyEnv account. It fails, naming the variable and never
// its value, when one is missing.
func NewEnvKeys(accounts map[string]config.Account, getenv func(string) string) (*EnvKeys, error) {
	k := &EnvKeys{keys: map[string]string{}}
	var missing []string
	for name, a := range accounts {
		if a.Auth.KeyEnv == "" {
			continue
		}
		v := strings.TrimSpace(getenv(a.Auth.KeyEnv))
		if v == "" {
			missing = append(missing, fmt.Sprintf("accounts.%s.auth.keyEnv: environment variable %s is not set or empty", name, a.Auth.KeyEnv))
			continue
		}
		k.keys[name] = v
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return nil, fmt.Errorf("%s", strings.Join(missing, "; "))
	}
	return k, nil
}

// ErrNoCredential means the account has no credential (yet).
var ErrNoCredential = fmt.Errorf("no credential for this account")

// Authorize sets the account's api-key header.
func (k *EnvKeys) Authorize(_ context.Context, account string, h http.Header) error {
	key, ok := k.keys[account]
	if !ok {
		return ErrNoCredential
	}
	h.Set("Api-Key", key)
	return nil
}

// Has reports whether the account has a credential.
func (k *EnvKeys) Has(account string) bool {
	_, ok := k.keys[account]
	return ok
}
