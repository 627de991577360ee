package secrets

import (
	"context"
	"fmt"
	"net/http"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/aoai-failover/gateway/handler/internal/config"
)

// CognitiveServicesScope is the Entra ID scope of Azure OpenAI.
const CognitiveServicesScope = "https://cognitiveservices.azure.com/.default"

// Credentials gives each account the credential its auth names: a key from the environment, a
// key from Key Vault, or an Entra ID token from the process's managed identity.
type Credentials struct {
	env     *EnvKeys
	vault   *VaultKeys
	entra   map[string]bool
	tokens  azcore.TokenCredential
	kind    map[string]string // account -> "keyEnv", "keyVaultSecret", "managedIdentity"
	secrets map[string]string // account -> vault secret name
}

// NewCredentials builds the sources the accounts need. vault may be nil when no account uses
// Key Vault; tokens may be nil when none uses a managed identity.
func NewCredentials(accounts map[string]config.Account, env *EnvKeys, vault *VaultKeys, tokens azcore.TokenCredential) *Credentials {
	c := &Credentials{env: env, vault: vault, tokens: tokens, entra: map[string]bool{}, kind: map[string]string{}, secrets: map[string]string{}}
	for name, a := range accounts {
		switch {
		case a.Auth.KeyEnv != "":
			c.kind[name] = "keyEnv"
		case a.Auth.KeyVaultSecret != "":
			c.kind[name] = "keyVaultSecret"
			c.secrets[name] = a.Auth.KeyVaultSecret
		case a.Auth.ManagedIdentity:
			c.kind[name] = "managedIdentity"
		}
	}
	return c
}

// Authorize sets the account's credential on an outgoing request's headers. azidentity keeps
// tokens in memory until shortly before they expire, so a token costs no call per request.
func (c *Credentials) Authorize(ctx context.Context, account string, h http.Header) error {
	switch c.kind[account] {
	case "keyEnv":
		return c.env.Authorize(ctx, account, h)
	case "keyVaultSecret":
		key, ok := c.vault.Key(c.secrets[account])
		if !ok {
			return ErrNoCredential
		}
		h.Set("Api-Key", key)
		return nil
	case "managedIdentity":
		tok, err := c.tokens.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{CognitiveServicesScope}})
		if err != nil {
			return fmt.Errorf("%w: managed identity token: %v", ErrNoCredential, err)
		}
		h.Set("Authorization", "Bearer "+tok.Token)
		return nil
	}
	return ErrNoCredential
}

// Has reports whether the account has a credential now (a managed identity counts as one:
// tokens are fetched when needed).
func (c *Credentials) Has(account string) bool {
	switch c.kind[account] {
	case "keyEnv":
		return c.env.Has(account)
	case "keyVaultSecret":
		_, ok := c.vault.Key(c.secrets[account])
		return ok
	case "managedIdentity":
		return c.tokens != nil
	}
	return false
}

// Rotate reads the account's Key Vault secret again after the key in sent was rejected (401),
// and reports whether the key changed, so the same target is worth one more try. Other kinds
// have nothing to rotate.
func (c *Credentials) Rotate(ctx context.Context, account string, sent http.Header) bool {
	if c.kind[account] != "keyVaultSecret" {
		return false
	}
	return c.vault.Refresh(ctx, c.secrets[account], sent.Get("Api-Key"))
}
