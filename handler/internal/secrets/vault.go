package secrets

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
)

// VaultKeys keeps Key Vault secrets (backend API keys) in memory: read in parallel at start,
// refreshed in the background, read again at once when a key is rejected. Requests never wait
// for Key Vault once a key is known; a failed refresh keeps the last good key.
type VaultKeys struct {
	client   *azsecrets.Client
	names    []string
	interval time.Duration
	log      *slog.Logger
	// forcedGap bounds forced reads of one secret, so a key that is simply wrong does not turn
	// every rejected request into a Key Vault read.
	forcedGap time.Duration

	mu       sync.RWMutex
	keys     map[string]string // secret name -> value; never logged
	failing  map[string]bool   // for logging once per change
	forcedAt map[string]time.Time
	inflight map[string]chan struct{}
}

// NewVaultKeys reads the named secrets from the vault at vaultURL with cred.
func NewVaultKeys(vaultURL string, cred azcore.TokenCredential, names []string, interval time.Duration, log *slog.Logger) (*VaultKeys, error) {
	client, err := azsecrets.NewClient(vaultURL, cred, nil)
	if err != nil {
		return nil, fmt.Errorf("key vault %s: %w", vaultURL, err)
	}
	return &VaultKeys{
		client: client, names: names, interval: interval, log: log, forcedGap: 10 * time.Second,
		keys: map[string]string{}, failing: map[string]bool{}, forcedAt: map[string]time.Time{}, inflight: map[string]chan struct{}{},
	}, nil
}

// Key returns the secret's value, if it has been read.
func (v *VaultKeys) Key(name string) (string, bool) {
	if v == nil {
		return "", false
	}
	v.mu.RLock()
	defer v.mu.RUnlock()
	k, ok := v.keys[name]
	return k, ok
}

// Ready reports whether every secret has been read at least once.
func (v *VaultKeys) Ready() bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.keys) == len(v.names)
}

// Load reads every secret in parallel and returns the first error.
func (v *VaultKeys) Load(ctx context.Context) error {
	errs := make(chan error, len(v.names))
	for _, name := range v.names {
		go func() { errs <- v.fetch(ctx, name) }()
	}
	var first error
	for range v.names {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Run refreshes the secrets every interval (with jitter, so instances do not read together)
// until ctx ends; while some secret has never been read, it retries sooner, backing off to 30 s.
func (v *VaultKeys) Run(ctx context.Context) {
	retry := time.Second
	for {
		wait := v.interval + time.Duration(rand.Int64N(int64(v.interval)/5+1)) - v.interval/10
		if !v.Ready() {
			wait, retry = retry, min(2*retry, 30*time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		lctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		_ = v.Load(lctx)
		cancel()
	}
}

// Refresh reads the secret again because used was rejected, and reports whether the key now
// differs from used. However many requests see the rejection, one read serves them all.
func (v *VaultKeys) Refresh(ctx context.Context, name, used string) bool {
	v.mu.Lock()
	if cur := v.keys[name]; cur != used && cur != "" {
		v.mu.Unlock()
		return true // someone already read the new key
	}
	if wait, ok := v.inflight[name]; ok {
		v.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return false
		}
		k, _ := v.Key(name)
		return k != used
	}
	if time.Since(v.forcedAt[name]) < v.forcedGap {
		v.mu.Unlock()
		return false // read moments ago and still rejected: the key is wrong, not stale
	}
	done := make(chan struct{})
	v.inflight[name], v.forcedAt[name] = done, time.Now()
	v.mu.Unlock()

	_ = v.fetch(ctx, name)
	v.mu.Lock()
	delete(v.inflight, name)
	close(done)
	changed := v.keys[name] != used
	v.mu.Unlock()
	return changed
}

// fetch reads the latest version of one secret.
func (v *VaultKeys) fetch(ctx context.Context, name string) error {
	resp, err := v.client.GetSecret(ctx, name, "", nil)
	var value string
	if err == nil {
		if resp.Value == nil || *resp.Value == "" {
			err = errors.New("the secret is empty")
		} else {
			value = *resp.Value
		}
	}
	v.mu.Lock()
	was := v.failing[name]
	if err != nil {
		v.failing[name] = true
	} else {
		v.failing[name] = false
		v.keys[name] = value
	}
	v.mu.Unlock()
	if err != nil {
		err = describe(name, err)
		if !was {
			v.log.Warn("could not read a Key Vault secret; keeping the last good value", "secret", name, "error", err)
		}
		return err
	}
	if was {
		v.log.Info("Key Vault secret readable again", "secret", name)
	}
	return nil
}

// describe keeps the service's status and code, never a response body or value.
func describe(name string, err error) error {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return fmt.Errorf("secret %s: HTTP %d %s", name, re.StatusCode, re.ErrorCode)
	}
	return fmt.Errorf("secret %s: %w", name, err)
}
