package state

import (
	"fmt"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
)

// devStorage is the local Azurite account, documented by Microsoft and the same on every
// machine. The Go SDK does not understand "UseDevelopmentStorage=true", so it is expanded here.
const devStorage = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;" +
	"AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;" +
	"TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"

// ExpandConnectionString turns UseDevelopmentStorage=true into the Azurite account's string.
func ExpandConnectionString(cs string) string {
	if strings.EqualFold(strings.TrimSuffix(strings.TrimSpace(cs), ";"), "UseDevelopmentStorage=true") {
		return devStorage
	}
	return cs
}

// NewServiceClient connects to Table Storage with a connection string, or with cred to
// serviceURI when cs is empty (identity-based connections).
func NewServiceClient(cs, serviceURI string, cred azcore.TokenCredential) (*aztables.ServiceClient, error) {
	if cs != "" {
		svc, err := aztables.NewServiceClientFromConnectionString(ExpandConnectionString(cs), nil)
		if err != nil {
			// The SDK's message can quote the string, key included: say only what is wrong.
			return nil, fmt.Errorf("the storage connection string is not usable by the Table Storage client")
		}
		return svc, nil
	}
	svc, err := aztables.NewServiceClient(serviceURI, cred, nil)
	if err != nil {
		return nil, fmt.Errorf("table service %s: %w", serviceURI, err)
	}
	return svc, nil
}
