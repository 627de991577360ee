package state

import (
	"fmt"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/aoai-failover/gateway/handler/internal/config"
)

// ExpandConnectionString turns UseDevelopmentStorage=true into the local Azurite account's
// string, which the Go SDK does not understand by that name.
func ExpandConnectionString(cs string) string { return config.ExpandConnectionString(cs) }

// NewServiceClient connects to Table Storage with a connection string, or with cred to
// serviceURI when cs is empty (identity-based connections). The connection string is read by
// config.ParseConnectionString, the same rules the settings are validated with, so a string
// that passed config.Load connects; its errors never quote the string.
func NewServiceClient(cs, serviceURI string, cred azcore.TokenCredential) (*aztables.ServiceClient, error) {
	if cs != "" {
		c, err := config.ParseConnectionString(cs)
		if err != nil {
			return nil, err
		}
		if c.AccountKey == "" {
			return aztables.NewServiceClientWithNoCredential(c.Endpoint+"?"+c.SharedAccessSignature, nil)
		}
		key, err := aztables.NewSharedKeyCredential(c.AccountName, c.AccountKey)
		if err != nil {
			// The SDK's message could quote the key: say only what is wrong.
			return nil, fmt.Errorf("the connection string's AccountKey is not usable as a shared key")
		}
		return aztables.NewServiceClientWithSharedKey(c.Endpoint, key, nil)
	}
	svc, err := aztables.NewServiceClient(serviceURI, cred, nil)
	if err != nil {
		return nil, fmt.Errorf("table service %s: %w", serviceURI, err)
	}
	return svc, nil
}
