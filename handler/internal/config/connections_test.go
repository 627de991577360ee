package config

import (
	"strings"
	"testing"
)

const testClientID = "7d2c1a9e-0000-4000-8000-00000000c1d0"

// The secrets in these strings must never appear in a message.
const (
	testKey = "c2VjcmV0LWFjY291bnQta2V5LXZhbHVl" // base64
	testSAS = "sv=2024-11-04&ss=t&srt=sco&sp=rwdlacu&se=2030-01-01T00:00:00Z&sig=c2VjcmV0LXNpZw%3D%3D"
)

func TestParseConnectionString(t *testing.T) {
	for _, tc := range []struct {
		name, cs, endpoint string
		sas                bool
	}{
		{"development storage", " UseDevelopmentStorage=true; ", "http://127.0.0.1:10002/devstoreaccount1", false},
		{"account and key", "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=" + testKey + ";EndpointSuffix=core.windows.net", "https://acct.table.core.windows.net", false},
		{"defaults", "AccountName=acct;AccountKey=" + testKey, "https://acct.table.core.windows.net", false},
		{"sovereign cloud", "AccountName=acct;AccountKey=" + testKey + ";EndpointSuffix=core.chinacloudapi.cn", "https://acct.table.core.chinacloudapi.cn", false},
		{"names in any case, other endpoints ignored", "defaultendpointsprotocol=HTTPS;accountname=acct;ACCOUNTKEY=" + testKey + ";BlobEndpoint=https://acct.blob.core.windows.net/;", "https://acct.table.core.windows.net", false},
		{"table endpoint and key", "AccountName=devstoreaccount1;AccountKey=" + testKey + ";TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;", "http://127.0.0.1:10002/devstoreaccount1", false},
		{"table endpoint and SAS", "TableEndpoint=https://acct.table.core.windows.net/;SharedAccessSignature=" + testSAS, "https://acct.table.core.windows.net/", true},
		{"account and SAS with a leading ?", "AccountName=acct;SharedAccessSignature=?" + testSAS, "https://acct.table.core.windows.net", true},
	} {
		c, err := ParseConnectionString(tc.cs)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if c.Endpoint != tc.endpoint || (c.SharedAccessSignature != "") != tc.sas || (c.AccountKey != "") == tc.sas {
			t.Errorf("%s: %+v", tc.name, c)
		}
		if tc.sas && c.SharedAccessSignature != testSAS {
			t.Errorf("%s: SAS %q", tc.name, c.SharedAccessSignature)
		}
	}

	for _, tc := range []struct{ name, cs, want string }{
		{"not key=value", "this is not a connection string", "not a storage connection string"},
		{"no credential", "AccountName=acct;EndpointSuffix=core.windows.net", "not a storage connection string"},
		{"a part without =", "AccountName=acct;" + testKey, "not a storage connection string"},
		{"key not base64", "AccountName=acct;AccountKey=not*base64" + testKey, "AccountKey is not valid base64"},
		{"key truncated", "AccountName=acct;AccountKey=" + testKey[:len(testKey)-1], "AccountKey is not valid base64"},
		{"empty key", "AccountName=acct;AccountKey=", "AccountKey is empty"},
		{"key without account", "AccountKey=" + testKey, "has an AccountKey but no AccountName"},
		{"key and endpoint without account", "TableEndpoint=https://acct.table.core.windows.net;AccountKey=" + testKey, "has an AccountKey but no AccountName"},
		{"SAS without endpoint", "SharedAccessSignature=" + testSAS, "neither TableEndpoint nor AccountName"},
		{"empty SAS", "AccountName=acct;SharedAccessSignature=", "SharedAccessSignature is empty"},
		{"SAS not a query", "AccountName=acct;SharedAccessSignature=sig=%zz" + testSAS, "SharedAccessSignature is not a URL query"},
		{"endpoint not a URL", "AccountName=acct;AccountKey=" + testKey + ";TableEndpoint=acct.table.core.windows.net", "TableEndpoint must be an http:// or https:// URL"},
		{"endpoint with a query", "TableEndpoint=https://acct.table.core.windows.net/?" + testSAS + ";SharedAccessSignature=" + testSAS, "TableEndpoint must be"},
		{"ftp endpoint", "AccountName=acct;AccountKey=" + testKey + ";TableEndpoint=ftp://acct", "TableEndpoint must be"},
		{"bad protocol", "DefaultEndpointsProtocol=tcp;AccountName=acct;AccountKey=" + testKey, "DefaultEndpointsProtocol must be http or https"},
		{"bad suffix", "AccountName=acct;AccountKey=" + testKey + ";EndpointSuffix=core windows net", "EndpointSuffix is not a host name"},
		{"bad account name", "AccountName=my account;AccountKey=" + testKey, "AccountName is not a storage account name"},
	} {
		_, err := ParseConnectionString(tc.cs)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), testKey[:16]) || strings.Contains(err.Error(), "sig=c2Vj") || strings.Contains(err.Error(), "acct.table") {
			t.Errorf("%s: the message quotes the string: %v", tc.name, err)
		}
	}
}

// TestStartSettings: the settings that name Azure resources and identities are checked by Load
// with the rules the start connects with, every problem in one list, no secret in it.
func TestStartSettings(t *testing.T) {
	base := map[string]string{"GATEWAY_CONFIG": validDoc, "SWC_KEY": "k1", "DEV_KEY": "k2"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	kvDoc := func(vault string) string {
		return strings.Replace(validDoc, `"accounts"`, `"keyVault": "`+vault+`", "accounts"`, 1)
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"account key not base64", with("GATEWAY_STATE_STORAGE", "AccountName=acct;AccountKey=!!"+testKey), []string{"GATEWAY_STATE_STORAGE: the connection string's AccountKey is not valid base64"}},
		{"fallback checked the same way", with("AzureWebJobsStorage", "AccountName=acct;AccountKey=!!"+testKey), []string{"AzureWebJobsStorage: the connection string's AccountKey is not valid base64"}},
		{"table service URI with a query", with("GATEWAY_STATE_STORAGE__tableServiceUri", "https://acct.table.core.windows.net/?"+testSAS), []string{"GATEWAY_STATE_STORAGE__tableServiceUri: must be an https:// URL"}},
		{"table service URI without a host", with("GATEWAY_STATE_STORAGE__tableServiceUri", "https://"), []string{"GATEWAY_STATE_STORAGE__tableServiceUri: must be an https:// URL"}},
		{"malformed AZURE_CLIENT_ID", with("AZURE_CLIENT_ID", "my-identity"), []string{"AZURE_CLIENT_ID: not a client id"}},
		{"resource id as AZURE_CLIENT_ID", with("AZURE_CLIENT_ID", "/subscriptions/x/resourceGroups/y/providers/Microsoft.ManagedIdentity/userAssignedIdentities/z"), []string{"AZURE_CLIENT_ID: is a resource id"}},
		{"malformed state clientId", with("AzureWebJobsStorage__tableServiceUri", "https://acct.table.core.windows.net", "AzureWebJobsStorage__clientId", testClientID+"x"), []string{"AzureWebJobsStorage__clientId: not a client id"}},
		{"key vault URL with a path", with("GATEWAY_CONFIG", kvDoc("https://kv.vault.azure.net/secrets/x")), []string{"keyVault: must be just the vault's https:// URL"}},
		{"key vault URL over http", with("GATEWAY_CONFIG", kvDoc("http://kv.vault.azure.net/")), []string{`keyVault: "http://kv.vault.azure.net/" must be an https:// vault URL`}},
		{"keyEnv holding a Key Vault reference", with("DEV_KEY", "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/dev/)"), []string{"accounts.dev.auth.keyEnv: environment variable DEV_KEY is an unresolved Key Vault reference"}},
		{"several at once", with("GATEWAY_STATE_STORAGE", "AccountName=acct;AccountKey=!!"+testKey, "AZURE_CLIENT_ID", "nope", "GATEWAY_STATE_TABLE", "x", "GATEWAY_CONFIG", kvDoc("https://kv/?x=1")),
			[]string{"AccountKey is not valid base64", "AZURE_CLIENT_ID", "GATEWAY_STATE_TABLE", "keyVault"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(env(tc.env))
			if err == nil {
				t.Fatal("accepted")
			}
			probs, ok := err.(Problems)
			if !ok || len(probs) != len(tc.want) {
				t.Errorf("want %d problems: %v", len(tc.want), err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
			if strings.Contains(err.Error(), testKey[:16]) || strings.Contains(err.Error(), "sig=c2Vj") {
				t.Errorf("error leaks a secret: %v", err)
			}
		})
	}

	for _, ok := range []map[string]string{
		with("AZURE_CLIENT_ID", testClientID),
		with("AZURE_CLIENT_ID", strings.ToUpper(testClientID)),
		with("GATEWAY_STATE_STORAGE__tableServiceUri", "https://acct.table.core.windows.net/", "GATEWAY_STATE_STORAGE__clientId", testClientID),
		with("GATEWAY_STATE_STORAGE", "TableEndpoint=https://acct.table.core.windows.net/;SharedAccessSignature="+testSAS),
		with("GATEWAY_CONFIG", kvDoc("https://kv.vault.azure.net/")),
		with("GATEWAY_CONFIG", kvDoc("https://127.0.0.1:8443")),
		// __clientId is read only with __tableServiceUri; a connection string names no identity.
		with("GATEWAY_STATE_STORAGE", "UseDevelopmentStorage=true", "GATEWAY_STATE_STORAGE__clientId", "unused"),
	} {
		if _, err := Load(env(ok)); err != nil {
			t.Errorf("refused: %v", err)
		}
	}
}
