// Package config reads the gateway's settings and routing document once at start and validates
// them, reporting every problem at once so an operator fixes a deployment in one round.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Settings is everything the gateway reads from its environment.
type Settings struct {
	// Addr is the listen address.
	Addr string
	// Routing is the parsed, validated, defaulted routing document.
	Routing Routing
	// State says where shared state lives; zero means per-instance state.
	State StateStorage
	// ClientID selects a user-assigned managed identity.
	ClientID string
	// FrontDoorID, when set, is the only x-azure-fdid accepted.
	FrontDoorID string
	// Warnings are things worth saying at start that do not stop it.
	Warnings []string
}

// StateStorage is the Table Storage connection for shared state.
type StateStorage struct {
	Setting          string // which setting it came from, for messages
	ConnectionString string // secret: never log
	TableServiceURI  string
	ClientID         string
	Table            string
	// Partition separates gateways that share one table.
	Partition string
	// Refresh is how often each instance reads the table.
	Refresh time.Duration
}

// Configured reports whether a shared store was named.
func (s StateStorage) Configured() bool { return s.ConnectionString != "" || s.TableServiceURI != "" }

// Problems is every problem found, reported together.
type Problems []string

func (p Problems) Error() string {
	if len(p) == 1 {
		return "invalid configuration: " + p[0]
	}
	return "invalid configuration (" + fmt.Sprint(len(p)) + " problems):\n  - " + strings.Join(p, "\n  - ")
}

const keyVaultReference = "@Microsoft.KeyVault("

// Load reads the settings from getenv. Relative GATEWAY_CONFIG paths resolve against the
// Functions app root (AzureWebJobsScriptRoot) or else the working directory.
func Load(getenv func(string) string) (*Settings, error) {
	var probs Problems
	get := func(name string) string {
		v := strings.TrimSpace(getenv(name))
		if strings.HasPrefix(v, keyVaultReference) {
			probs = append(probs, name+": is an unresolved Key Vault reference; the platform could not read the secret (check the app's identity has Key Vault Secrets User and the reference's URI)")
			return ""
		}
		return v
	}
	s := &Settings{}
	s.Addr = listenAddr(get, &probs)
	s.ClientID = get("AZURE_CLIENT_ID")
	s.FrontDoorID = get("GATEWAY_FRONTDOOR_ID")
	s.State = stateStorage(get, &probs)
	if !s.State.Configured() {
		s.Warnings = append(s.Warnings, "no GATEWAY_STATE_STORAGE or AzureWebJobsStorage: throttle and circuit state is per instance, not shared")
	}

	raw := get("GATEWAY_CONFIG")
	switch {
	case raw == "" && len(probs) == 0 && getenv("GATEWAY_CONFIG") == "":
		probs = append(probs, "GATEWAY_CONFIG: not set; give the routing document as inline JSON or a path to a JSON file")
	case raw == "":
	default:
		doc, source, err := readDocument(raw, get("AzureWebJobsScriptRoot"))
		if err != nil {
			probs = append(probs, "GATEWAY_CONFIG: "+err.Error())
			break
		}
		r, docProbs := ParseRouting(doc)
		for _, p := range docProbs {
			probs = append(probs, "GATEWAY_CONFIG"+source+": "+p)
		}
		if r != nil {
			probs = append(probs, checkKeyEnv(r, getenv)...)
			s.Routing = *r
			if r.Clients != nil && r.Clients.Anonymous {
				s.Warnings = append(s.Warnings, "clients.anonymous is true: anyone who can reach the gateway can call every deployment behind it")
			}
		}
	}
	probs = append(probs, identityProblems(s)...)
	if len(probs) > 0 {
		return nil, probs
	}
	return s, nil
}

func listenAddr(get func(string) string, probs *Problems) string {
	if p := get("FUNCTIONS_CUSTOMHANDLER_PORT"); p != "" {
		if !validPort(p) {
			*probs = append(*probs, fmt.Sprintf("FUNCTIONS_CUSTOMHANDLER_PORT: %q is not a port number", p))
		}
		return "127.0.0.1:" + p
	}
	if p := get("PORT"); p != "" {
		if !validPort(p) {
			*probs = append(*probs, fmt.Sprintf("PORT: %q is not a port number", p))
		}
		return ":" + p
	}
	return ":8080"
}

func validPort(p string) bool {
	n := 0
	for _, c := range p {
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + int(c-'0')
		if n > 65535 {
			return false
		}
	}
	return p != ""
}

func readDocument(raw, root string) (doc []byte, source string, err error) {
	if strings.HasPrefix(raw, "{") {
		return []byte(raw), "", nil
	}
	path := raw
	if !filepath.IsAbs(path) && root != "" {
		path = filepath.Join(root, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, "", fmt.Errorf("file %s does not exist (the value is neither inline JSON nor an existing file)", path)
		}
		return nil, "", fmt.Errorf("read %s: %w", path, err)
	}
	return b, " (" + path + ")", nil
}

// ParseRouting parses and validates a routing document, returning every problem found. The
// document is returned with defaults applied when it could be decoded at all.
func ParseRouting(doc []byte) (*Routing, []string) {
	var probs []string
	if !json.Valid(doc) {
		var v any
		err := json.Unmarshal(doc, &v)
		return nil, []string{"not valid JSON: " + err.Error()}
	}
	if t := bytes.TrimSpace(doc); len(t) == 0 || t[0] != '{' {
		return nil, []string{"must be a JSON object"}
	}
	probs = append(probs, checkKeys(doc)...)
	var r Routing
	if err := json.Unmarshal(doc, &r); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			probs = append(probs, fmt.Sprintf("%s: want %s, got a JSON %s", te.Field, te.Type, te.Value))
		} else {
			probs = append(probs, err.Error())
		}
	}
	r.applyDefaults()
	probs = append(probs, r.validate()...)
	sort.Strings(probs)
	return &r, probs
}

func checkKeyEnv(r *Routing, getenv func(string) string) []string {
	var probs []string
	for _, name := range sortedKeys(r.Accounts) {
		if env := r.Accounts[name].Auth.KeyEnv; env != "" && strings.TrimSpace(getenv(env)) == "" {
			probs = append(probs, fmt.Sprintf("accounts.%s.auth.keyEnv: environment variable %s is not set or empty", name, env))
		} else if env != "" && strings.HasPrefix(strings.TrimSpace(getenv(env)), keyVaultReference) {
			probs = append(probs, fmt.Sprintf("accounts.%s.auth.keyEnv: environment variable %s is an unresolved Key Vault reference; the platform could not read the secret (check the app's identity has Key Vault Secrets User and the reference's URI)", name, env))
		}
	}
	return probs
}

func stateStorage(get func(string) string, probs *Problems) StateStorage {
	st := StateStorage{Table: "gatewaystate", Partition: "gateway", Refresh: time.Second}
	if r := get("GATEWAY_STATE_REFRESH"); r != "" {
		d, err := time.ParseDuration(r)
		if err != nil || d < 100*time.Millisecond || d > time.Minute {
			*probs = append(*probs, fmt.Sprintf("GATEWAY_STATE_REFRESH: %q must be a duration from 100ms to 1m, such as \"1s\"", r))
		} else {
			st.Refresh = d
		}
	}
	if p := get("GATEWAY_STATE_PARTITION"); p != "" {
		if len(p) > 255 || strings.ContainsAny(p, "/\\#?'") || strings.IndexFunc(p, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
			*probs = append(*probs, fmt.Sprintf("GATEWAY_STATE_PARTITION: %q may not contain / \\ # ? ' or control characters (at most 255)", p))
		}
		st.Partition = p
	}
	if t := get("GATEWAY_STATE_TABLE"); t != "" {
		if !validTableName(t) {
			*probs = append(*probs, fmt.Sprintf("GATEWAY_STATE_TABLE: %q is not a valid table name (3-63 letters and digits, starting with a letter)", t))
		}
		st.Table = t
	}
	for _, prefix := range []string{"GATEWAY_STATE_STORAGE", "AzureWebJobsStorage"} {
		if cs := get(prefix); cs != "" {
			st.Setting, st.ConnectionString = prefix, cs
			if _, err := ParseConnectionString(cs); err != nil {
				*probs = append(*probs, prefix+": "+err.Error())
			}
			return st
		}
		if uri := get(prefix + "__tableServiceUri"); uri != "" {
			st.Setting, st.TableServiceURI, st.ClientID = prefix+"__tableServiceUri", uri, get(prefix+"__clientId")
			if err := checkTableServiceURI(uri); err != nil {
				*probs = append(*probs, prefix+"__tableServiceUri: "+err.Error())
			}
			return st
		}
	}
	return st
}

func validTableName(t string) bool {
	if len(t) < 3 || len(t) > 63 || !isLetter(t[0]) {
		return false
	}
	for i := 0; i < len(t); i++ {
		if !isLetter(t[i]) && (t[i] < '0' || t[i] > '9') {
			return false
		}
	}
	return true
}

func isLetter(c byte) bool { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
