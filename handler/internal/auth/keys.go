package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"log/slog"
	"sort"
	"sync"
)

// KeySource gives the current value of a secret (the client keys' JSON document).
type KeySource interface {
	Key(name string) (string, bool)
}

// ClientKeys checks callers' api-key headers against the keys in a Key Vault secret holding a
// JSON object {"app-name": "key", ...}. The secret is parsed again only when its value changes,
// so keys rotate without a restart.
type ClientKeys struct {
	Source KeySource
	Secret string
	Log    *slog.Logger

	mu     sync.Mutex
	raw    string
	parsed []appKey
	bad    bool
}

type appKey struct {
	app    string
	digest [32]byte
}

// Loaded reports whether the keys have been read.
func (c *ClientKeys) Loaded() bool {
	_, ok := c.Source.Key(c.Secret)
	return ok
}

func (c *ClientKeys) keys() []appKey {
	raw, _ := c.Source.Key(c.Secret)
	c.mu.Lock()
	defer c.mu.Unlock()
	if raw == c.raw && c.parsed != nil {
		return c.parsed
	}
	var m map[string]string
	err := json.Unmarshal([]byte(raw), &m)
	c.raw, c.parsed = raw, []appKey{}
	if err != nil || len(m) == 0 {
		if !c.bad && raw != "" {
			c.Log.Error("the client keys secret is not a JSON object of app name to key; no caller key is accepted", "secret", c.Secret)
		}
		c.bad = raw != ""
		return c.parsed
	}
	c.bad = false
	apps := make([]string, 0, len(m))
	for app := range m {
		apps = append(apps, app)
	}
	sort.Strings(apps)
	for _, app := range apps {
		if m[app] != "" {
			c.parsed = append(c.parsed, appKey{app: app, digest: sha256.Sum256([]byte(m[app]))})
		}
	}
	return c.parsed
}

// Check returns the app whose key is presented. Every key is compared, in constant time on
// fixed-length digests, so neither the time taken nor the answer says which was close.
func (c *ClientKeys) Check(presented string) (string, bool) {
	if presented == "" {
		return "", false
	}
	d := sha256.Sum256([]byte(presented))
	app := ""
	for _, k := range c.keys() {
		if subtle.ConstantTimeCompare(d[:], k.digest[:]) == 1 {
			app = k.app
		}
	}
	return app, app != ""
}
