package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// This file holds the checks of the settings that name Azure resources and identities (the
// state storage connection, the identities' client ids). They are the same rules the start
// connects with: internal/state builds its Table Storage client from ParseConnectionString's
// result, so a connection string that passes Load is one the client accepts. Their messages
// never quote a connection string, a key or a shared access signature.

// developmentStorage is the local Azurite account, documented by Microsoft and the same on every
// machine. The Go SDK does not understand "UseDevelopmentStorage=true", so it is expanded here.
const developmentStorage = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;" +
	"AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;" +
	"TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"

// ExpandConnectionString turns UseDevelopmentStorage=true into the Azurite account's string.
func ExpandConnectionString(cs string) string {
	if strings.EqualFold(strings.TrimSuffix(strings.TrimSpace(cs), ";"), "UseDevelopmentStorage=true") {
		return developmentStorage
	}
	return cs
}

// TableConnection is a storage connection string as the gateway connects with it.
type TableConnection struct {
	// Endpoint is the table service's URL, without a query.
	Endpoint string
	// AccountName and AccountKey sign requests with the account's shared key.
	AccountName string
	AccountKey  string // secret: never log
	// SharedAccessSignature, used when there is no AccountKey, is the query every request carries.
	SharedAccessSignature string // secret: never log
}

// errNotConnectionString is the message for a string with neither usable form.
var errNotConnectionString = errors.New("not a storage connection string (want UseDevelopmentStorage=true or one with AccountName and AccountKey, or TableEndpoint and SharedAccessSignature)")

// ParseConnectionString reads a storage connection string: UseDevelopmentStorage=true (the local
// Azurite), or `key=value` pairs separated by ';' (names in any case, unknown names such as
// BlobEndpoint ignored) with AccountName and AccountKey (base64) or a SharedAccessSignature, and
// the table endpoint from TableEndpoint or else DefaultEndpointsProtocol, AccountName and
// EndpointSuffix. Its errors say what is wrong without quoting any part of the string.
func ParseConnectionString(cs string) (TableConnection, error) {
	parts := map[string]string{}
	for _, part := range strings.Split(ExpandConnectionString(strings.TrimSpace(cs)), ";") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		k = strings.ToLower(strings.TrimSpace(k))
		if !ok || k == "" {
			return TableConnection{}, errNotConnectionString
		}
		parts[k] = strings.TrimSpace(v)
	}
	var c TableConnection
	c.AccountName = parts["accountname"]
	key, hasKey := parts["accountkey"]
	sas, hasSAS := parts["sharedaccesssignature"]
	endpoint, hasEndpoint := parts["tableendpoint"]
	switch {
	case hasKey:
		if key == "" {
			return TableConnection{}, errors.New("the connection string's AccountKey is empty")
		}
		if c.AccountName == "" {
			return TableConnection{}, errors.New("the connection string has an AccountKey but no AccountName; a shared key is used with its account's name")
		}
		if _, err := base64.StdEncoding.DecodeString(key); err != nil {
			return TableConnection{}, errors.New("the connection string's AccountKey is not valid base64; copy the key again from the storage account's Access keys")
		}
		c.AccountKey = key
	case hasSAS:
		sas = strings.TrimPrefix(sas, "?")
		if sas == "" {
			return TableConnection{}, errors.New("the connection string's SharedAccessSignature is empty")
		}
		if _, err := url.ParseQuery(sas); err != nil {
			return TableConnection{}, errors.New("the connection string's SharedAccessSignature is not a URL query (sv=...&sig=...)")
		}
		if !hasEndpoint && c.AccountName == "" {
			return TableConnection{}, errors.New("the connection string has a SharedAccessSignature but neither TableEndpoint nor AccountName, so no table endpoint")
		}
		c.SharedAccessSignature = sas
	default:
		return TableConnection{}, errNotConnectionString
	}
	if hasEndpoint {
		u, err := url.Parse(endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
			return TableConnection{}, errors.New("the connection string's TableEndpoint must be an http:// or https:// URL with a host, and no credentials or query")
		}
		c.Endpoint = endpoint
		return c, nil
	}
	protocol := strings.ToLower(parts["defaultendpointsprotocol"])
	if protocol == "" {
		protocol = "https"
	}
	if protocol != "http" && protocol != "https" {
		return TableConnection{}, errors.New("the connection string's DefaultEndpointsProtocol must be http or https")
	}
	suffix := parts["endpointsuffix"]
	if suffix == "" {
		suffix = "core.windows.net"
	}
	if !validHostName(suffix) {
		return TableConnection{}, errors.New("the connection string's EndpointSuffix is not a host name (like core.windows.net)")
	}
	if !validHostLabel(c.AccountName) {
		return TableConnection{}, errors.New("the connection string's AccountName is not a storage account name (letters and digits)")
	}
	c.Endpoint = protocol + "://" + c.AccountName + ".table." + suffix
	return c, nil
}

// checkTableServiceURI checks an identity-based connection's table service URL. It does not
// quote the value: a URL given with a query may hold a shared access signature.
func checkTableServiceURI(uri string) error {
	u, err := url.Parse(uri)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return errors.New("must be an https:// URL like https://ACCOUNT.table.core.windows.net, with no credentials, query or fragment")
	}
	return nil
}

// identityProblems checks the settings that name a managed identity: AZURE_CLIENT_ID and an
// identity-based state connection's __clientId. Managed identities are named by their client
// id, a GUID; anything else would pass the start and fail at every token request.
func identityProblems(s *Settings) []string {
	var probs []string
	if p := checkClientID("AZURE_CLIENT_ID", s.ClientID); p != "" {
		probs = append(probs, p)
	}
	if s.State.TableServiceURI != "" {
		setting := strings.TrimSuffix(s.State.Setting, "__tableServiceUri") + "__clientId"
		if p := checkClientID(setting, s.State.ClientID); p != "" {
			probs = append(probs, p)
		}
	}
	return probs
}

func checkClientID(setting, id string) string {
	if id == "" || validGUID(id) {
		return ""
	}
	if strings.HasPrefix(strings.ToLower(id), "/subscriptions/") {
		return setting + ": is a resource id; give the identity's client id, a GUID (az identity show --query clientId)"
	}
	return fmt.Sprintf("%s: not a client id; give the managed identity's client id, a GUID like 00000000-0000-0000-0000-000000000000 (the value has %d characters)", setting, len(id))
}

func validGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if (c < '0' || c > '9') && (c < 'a' || c > 'f') && (c < 'A' || c > 'F') {
				return false
			}
		}
	}
	return true
}

// validHostLabel is one DNS label: letters, digits and '-', not at either end.
func validHostLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isLetter(c) && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

func validHostName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if !validHostLabel(label) {
			return false
		}
	}
	return true
}
