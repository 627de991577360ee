package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"reflect"
	"strings"
	"time"
)

const (
	maxPriority = 1000
	maxWeight   = 1000
)

func (r *Routing) validate() []string {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }

	if r.KeyVault != "" {
		if u, err := url.Parse(r.KeyVault); err != nil || u.Scheme != "https" || u.Host == "" {
			add("keyVault: %q must be an https:// vault URL", r.KeyVault)
		} else if u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || (u.Path != "" && u.Path != "/") {
			add("keyVault: must be just the vault's https:// URL, like https://NAME.vault.azure.net/, with no path, query or credentials")
		}
	}
	if len(r.Accounts) == 0 {
		add("accounts: at least one account is required")
	}
	for _, name := range sortedKeys(r.Accounts) {
		a := r.Accounts[name]
		at := "accounts." + name
		if !validName(name) {
			add("%s: account names may only contain letters, digits, '-' and '_'", at)
		}
		if err := checkEndpoint(a.Endpoint); err != nil {
			add("%s.endpoint: %v", at, err)
		}
		set := 0
		if a.Auth.KeyVaultSecret != "" {
			set++
			if r.KeyVault == "" {
				add("%s.auth.keyVaultSecret: needs the document's keyVault (the vault's URL)", at)
			}
			if !validSecretName(a.Auth.KeyVaultSecret) {
				add("%s.auth.keyVaultSecret: %q is not a Key Vault secret name (1-127 letters, digits and '-')", at, a.Auth.KeyVaultSecret)
			}
		}
		if a.Auth.ManagedIdentity {
			set++
		}
		if a.Auth.KeyEnv != "" {
			set++
		}
		if set != 1 {
			add("%s.auth: set exactly one of keyVaultSecret, managedIdentity, keyEnv (found %d)", at, set)
		}
	}
	if len(r.Deployments) == 0 {
		add("deployments: at least one logical deployment is required")
	}
	for _, name := range sortedKeys(r.Deployments) {
		targets := r.Deployments[name]
		at := "deployments." + name
		if !validDeploymentName(name) {
			add("%s: logical names may only contain letters, digits, '.', '-' and '_' (at most 64)", at)
		}
		if len(targets) == 0 {
			add("%s: the target list is empty", at)
		}
		seen := map[string]int{}
		for i, t := range targets {
			tat := fmt.Sprintf("%s[%d]", at, i)
			if t.Account == "" {
				add("%s.account: required", tat)
			} else if _, ok := r.Accounts[t.Account]; !ok {
				add("%s.account: unknown account %q (known: %s)", tat, t.Account, strings.Join(sortedKeys(r.Accounts), ", "))
			}
			if !validDeploymentName(t.Deployment) {
				add("%s.deployment: %q must be 1-64 letters, digits, '.', '-' or '_'", tat, t.Deployment)
			}
			if pr := t.PriorityOrDefault(); pr < 1 || pr > maxPriority {
				add("%s.priority: %d is out of range 1..%d", tat, pr, maxPriority)
			}
			if w := t.WeightOrDefault(); w < 1 || w > maxWeight {
				add("%s.weight: %d is out of range 1..%d", tat, w, maxWeight)
			}
			if j, dup := seen[t.ID()]; dup {
				add("%s: duplicate target %s (also at index %d)", tat, t.ID(), j)
			}
			seen[t.ID()] = i
		}
	}

	if d := r.DefaultDeployment; d != "" {
		if _, ok := r.Deployments[d]; !ok {
			add("defaultDeployment: %q is not a logical deployment (known: %s)", d, strings.Join(sortedKeys(r.Deployments), ", "))
		}
	}
	if c := r.CORS; c != nil {
		if len(c.AllowedOrigins) == 0 {
			add("cors.allowedOrigins: name at least one origin, like https://app.contoso.com")
		}
		for i, o := range c.AllowedOrigins {
			if o == "*" {
				continue
			}
			u, err := url.Parse(o)
			if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil {
				add("cors.allowedOrigins[%d]: %q is not an origin (scheme and host, like https://app.contoso.com, no path)", i, o)
			}
		}
		if c.MaxAge.D() < 0 || c.MaxAge.D() > 24*time.Hour {
			add("cors.maxAge: %s is out of range 0..24h", c.MaxAge.D())
		}
	}
	if r.State.OwnerTTL.D() < time.Minute {
		add("state.ownerTtl: %s is below the 1m minimum", r.State.OwnerTTL.D())
	}
	if r.State.MaxCachedOwners < 1 {
		add("state.maxCachedOwners: %d must be at least 1", r.State.MaxCachedOwners)
	}

	switch c := r.Clients; {
	case c == nil:
		add(`clients: required; say how callers authenticate, or {"anonymous": true} to accept any caller`)
	default:
		if c.KeyVaultSecret != "" {
			if r.KeyVault == "" {
				add("clients.keyVaultSecret: needs the document's keyVault (the vault's URL)")
			}
			if !validSecretName(c.KeyVaultSecret) {
				add("clients.keyVaultSecret: %q is not a Key Vault secret name (1-127 letters, digits and '-')", c.KeyVaultSecret)
			}
		}
		if e := c.Entra; e != nil {
			if e.TenantID == "" || strings.ContainsAny(e.TenantID, "/?#") {
				add("clients.entra.tenantId: required, the tenant's id or domain")
			}
			if e.Audience == "" {
				add("clients.entra.audience: required, the gateway's app id URI or client id that tokens are issued for")
			}
			if e.Authority != "" {
				if err := checkEndpoint(e.Authority); err != nil {
					add("clients.entra.authority: %v", err)
				}
			}
		}
		if !c.Anonymous && c.KeyVaultSecret == "" && c.Entra == nil {
			add(`clients: no caller authentication configured; set keyVaultSecret, entra, or "anonymous": true`)
		}
		if c.Anonymous && (c.KeyVaultSecret != "" || c.Entra != nil) {
			add("clients.anonymous: cannot be combined with keyVaultSecret or entra")
		}
	}

	t := r.Timeouts
	for _, d := range []struct {
		name string
		v    Duration
	}{
		{"timeouts.connect", t.Connect}, {"timeouts.firstByte", t.FirstByte},
		{"timeouts.perOutputToken", t.PerOutputToken}, {"timeouts.streamIdle", t.StreamIdle},
		{"timeouts.request", t.Request}, {"timeouts.shutdown", t.Shutdown}, {"timeouts.requestBody", t.RequestBody},
		{"timeouts.realtimeIdle", t.RealtimeIdle}, {"timeouts.realtimeSession", t.RealtimeSession},
		{"throttle.defaultRetryAfter", r.Throttle.DefaultRetryAfter}, {"throttle.maxRetryAfter", r.Throttle.MaxRetryAfter},
		{"circuit.cooldown", r.Circuit.Cooldown}, {"circuit.misconfigured", r.Circuit.Misconfigured},
		{"secrets.refresh", r.Secrets.Refresh},
		{"throttle.tokenWindow", r.Throttle.TokenWindow}, {"throttle.requestWindow", r.Throttle.RequestWindow},
	} {
		if d.v <= 0 {
			add(`%s: must be a positive duration string such as "30s"`, d.name)
		}
	}
	if t.Request > Duration(FunctionsRequestLimit) {
		add("timeouts.request: %s exceeds the Functions host's %s limit on an HTTP request", t.Request.D(), FunctionsRequestLimit)
	}
	if t.RealtimeSession > Duration(MaxRealtimeSession) {
		add("timeouts.realtimeSession: %s exceeds %s, the longest a WebSocket connection lasts through Azure Front Door", t.RealtimeSession.D(), MaxRealtimeSession)
	}
	if t.RealtimeIdle > t.RealtimeSession && t.RealtimeSession > 0 {
		add("timeouts.realtimeIdle: must not exceed timeouts.realtimeSession")
	}
	if t.DefaultOutputTokens < 1 {
		add("timeouts.defaultOutputTokens: must be at least 1")
	}
	if r.Throttle.MaxRetryAfter < r.Throttle.DefaultRetryAfter {
		add("throttle.maxRetryAfter: must not be below throttle.defaultRetryAfter")
	}
	if r.Circuit.Failures < 1 || r.Circuit.Failures > 100 {
		add("circuit.failures: %d is out of range 1..100", r.Circuit.Failures)
	}
	if r.Limits.MaxStreamEventBytes < 64<<10 {
		add("limits.maxStreamEventBytes: %d is below the 64 KiB minimum", r.Limits.MaxStreamEventBytes)
	}
	if r.Limits.MaxPendingBodies < 1 {
		add("limits.maxPendingBodies: %d must be at least 1", r.Limits.MaxPendingBodies)
	}
	if r.Limits.MaxConcurrentRequests < 1 {
		add("limits.maxConcurrentRequests: %d must be at least 1", r.Limits.MaxConcurrentRequests)
	}
	if r.Limits.MaxRequestBodyBytes < 1<<10 {
		add("limits.maxRequestBodyBytes: %d is below the 1 KiB minimum", r.Limits.MaxRequestBodyBytes)
	}
	if w := r.Throttle.TokenWindow; w > 0 && (w.D() < time.Second || w.D() > time.Hour) {
		add("throttle.tokenWindow: %s is out of range 1s..1h", w.D())
	}
	if w := r.Throttle.RequestWindow; w > 0 && (w.D() < 100*time.Millisecond || w.D() > time.Hour) {
		add("throttle.requestWindow: %s is out of range 100ms..1h", w.D())
	}
	p = append(p, r.validateAdmission()...)
	p = append(p, r.validateBudgets()...)
	return p
}

// Bounds of the admission and budget settings.
const (
	maxQueuedLimit  = 1_000_000
	minQueuedBytes  = 1 << 10
	maxAppNameBytes = 256
)

func (r *Routing) validateAdmission() []string {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	for _, name := range sortedKeys(r.Admission) {
		a := r.Admission[name]
		at := "admission." + name
		if _, ok := r.Deployments[name]; !ok {
			add("%s: %q is not a logical deployment (known: %s)", at, name, strings.Join(sortedKeys(r.Deployments), ", "))
		}
		switch {
		case a.MaxWait <= 0:
			add(`%s.maxWait: required, a positive duration string such as "2s"`, at)
		case r.Timeouts.Request > 0 && a.MaxWait > r.Timeouts.Request:
			add("%s.maxWait: %s exceeds timeouts.request (%s)", at, a.MaxWait.D(), r.Timeouts.Request.D())
		}
		if a.MaxQueued < 1 || a.MaxQueued > maxQueuedLimit {
			add("%s.maxQueued: %d is out of range 1..%d", at, a.MaxQueued, maxQueuedLimit)
		}
		if a.MaxQueuedBytes < minQueuedBytes {
			add("%s.maxQueuedBytes: %d is below the 1 KiB minimum", at, a.MaxQueuedBytes)
		}
	}
	return p
}

func (r *Routing) validateBudgets() []string {
	b := r.Budgets
	if b == nil {
		return nil
	}
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	if b.Window.D() < time.Second || b.Window.D() > time.Hour {
		add("budgets.window: must be a duration string in 1s..1h, such as \"1m\"")
	}
	if len(b.Apps) == 0 {
		add(`budgets.apps: name at least one app, like {"app-a": {"tokensPerMinute": 100000}}`)
	}
	for _, app := range sortedKeys(b.Apps) {
		a := b.Apps[app]
		at := "budgets.apps." + app
		if strings.TrimSpace(app) == "" || len(app) > maxAppNameBytes {
			add("budgets.apps: an app name must be 1-%d bytes, not blank", maxAppNameBytes)
		}
		if a.TokensPerMinute < 0 {
			add("%s.tokensPerMinute: %d must not be negative", at, a.TokensPerMinute)
		}
		if a.TokensPerMinute == 0 && len(a.Deployments) == 0 {
			add("%s: set tokensPerMinute, deployments, or both", at)
		}
		for _, name := range sortedKeys(a.Deployments) {
			if _, ok := r.Deployments[name]; !ok {
				add("%s.deployments.%s: %q is not a logical deployment (known: %s)", at, name, name, strings.Join(sortedKeys(r.Deployments), ", "))
			}
			if v := a.Deployments[name]; v <= 0 {
				add("%s.deployments.%s: %d must be a positive number of tokens per minute", at, name, v)
			}
		}
	}
	return p
}

func validSecretName(s string) bool {
	if s == "" || len(s) > 127 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isLetter(c) && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

func checkEndpoint(raw string) error {
	if raw == "" {
		return fmt.Errorf("required")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%q is not an absolute URL", raw)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") {
		return fmt.Errorf("%q must be just scheme and host, like https://NAME.openai.azure.com", raw)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			return fmt.Errorf("%q: plain http is accepted only for loopback addresses", raw)
		}
	default:
		return fmt.Errorf("%q must use https", raw)
	}
	return nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isLetter(c) && (c < '0' || c > '9') && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

// validDeploymentName follows Azure OpenAI's rule for deployment names, which the gateway
// also applies to logical names so that they can stand in a URL path unescaped.
func validDeploymentName(s string) bool {
	if s == "" || len(s) > 64 || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isLetter(c) && (c < '0' || c > '9') && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

// checkKeys walks the document's tokens against the Routing type and reports keys it does
// not know and keys given twice; encoding/json silently ignores the first and keeps the last.
func checkKeys(doc []byte) []string {
	var probs []string
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	walkKeys(dec, reflect.TypeOf(Routing{}), "", &probs)
	return probs
}

func walkKeys(dec *json.Decoder, t reflect.Type, path string, probs *[]string) {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	tok, err := dec.Token()
	if err != nil {
		return
	}
	delim, ok := tok.(json.Delim)
	if !ok {
		return
	}
	switch delim {
	case '[':
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for i := 0; dec.More(); i++ {
			walkKeys(dec, elem, fmt.Sprintf("%s[%d]", path, i), probs)
		}
	case '{':
		seen := map[string]bool{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return
			}
			key, _ := kt.(string)
			at := key
			if path != "" {
				at = path + "." + key
			}
			if seen[key] {
				*probs = append(*probs, at+": given more than once")
			}
			seen[key] = true
			var next reflect.Type
			switch {
			case t == nil:
			case t.Kind() == reflect.Map:
				next = t.Elem()
			case t.Kind() == reflect.Struct:
				if f, ok := fieldByJSONName(t, key); ok {
					next = f
				} else {
					*probs = append(*probs, at+": unknown field"+suggest(t, key))
				}
			}
			walkKeys(dec, next, at, probs)
		}
	}
	_, _ = dec.Token() // the closing delimiter
}

func fieldByJSONName(t reflect.Type, name string) (reflect.Type, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if tag == name {
			return f.Type, true
		}
	}
	return nil, false
}

// suggest names a known field that differs only in case, the commonest slip.
func suggest(t reflect.Type, key string) string {
	var known []string
	for i := 0; i < t.NumField(); i++ {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if strings.EqualFold(tag, key) {
			return fmt.Sprintf(" (did you mean %q?)", tag)
		}
		known = append(known, tag)
	}
	return " (known: " + strings.Join(known, ", ") + ")"
}
