#!/usr/bin/env bash
# Deploys the gateway: the ARM template (Front Door + WAF, one Flex Consumption Function App per
# region, Key Vault, state storage, Application Insights, Azure OpenAI), then the handler's
# package to every app; waits until Front Door answers /healthz and prints a request to try.
#
#   infra/deploy.sh -g RESOURCE_GROUP [-p infra/main.parameters.json] [-l LOCATION] [--what-if]
#
# Needs: az (logged in: az login), Go (to build the handler), curl.
set -euo pipefail

usage() {
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-2}"
}

fail() { echo "deploy: $*" >&2; exit 1; }
say() { echo "== $*"; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
group="" params="$here/main.parameters.json" location="" what_if=false
health_timeout=${DEPLOY_HEALTH_TIMEOUT:-1200} # Front Door can take 10-20 minutes to serve a new endpoint
while [ $# -gt 0 ]; do
  case "$1" in
    -g|--resource-group) group=${2:-}; shift 2 ;;
    -p|--parameters) params=${2:-}; shift 2 ;;
    -l|--location) location=${2:-}; shift 2 ;;
    --what-if) what_if=true; shift ;;
    -h|--help) usage 0 ;;
    *) echo "deploy: unknown argument $1" >&2; usage ;;
  esac
done
[ -n "$group" ] || { echo "deploy: -g RESOURCE_GROUP is required" >&2; usage; }
[ -f "$params" ] || fail "parameters file $params not found"

command -v az >/dev/null 2>&1 || fail "the Azure CLI (az) is not installed: https://learn.microsoft.com/cli/azure/install-azure-cli"
az account show --output none >/dev/null 2>&1 || fail "az is not logged in: run 'az login' (and 'az account set -s SUBSCRIPTION')"
$what_if || command -v go >/dev/null 2>&1 || fail "Go is not installed; it builds the handler (https://go.dev/dl/)"
$what_if || command -v curl >/dev/null 2>&1 || fail "curl is not installed"

if ! az group show -n "$group" --output none >/dev/null 2>&1; then
  [ -n "$location" ] || fail "resource group $group does not exist; give -l LOCATION to create it"
  $what_if && fail "resource group $group does not exist; what-if needs it (create it, or drop --what-if)"
  say "creating resource group $group in $location"
  az group create -n "$group" -l "$location" --output none
fi

# Whoever deploys gets Key Vault Secrets Officer, to store the client keys below.
deployer=""
if [ "$(az account show --query user.type -o tsv)" = "user" ]; then
  deployer=$(az ad signed-in-user show --query id -o tsv 2>/dev/null || true)
else
  deployer=$(az ad sp show --id "$(az account show --query user.name -o tsv)" --query id -o tsv 2>/dev/null || true)
fi
[ -n "$deployer" ] || echo "deploy: could not find your object id; store the client keys in Key Vault yourself" >&2

template_args=(--resource-group "$group" --template-file "$here/main.json" --parameters "@$params")
[ -n "$deployer" ] && template_args+=(--parameters "deployerPrincipalId=$deployer")

if $what_if; then
  say "what-if: what the template would change in $group"
  az deployment group what-if "${template_args[@]}"
  exit 0
fi

say "building the package (linux/amd64, CGO_ENABLED=0)"
zip="$repo/dist/gateway.zip"
(cd "$repo" && go run ./infra/pack -o "$zip" >/dev/null)

say "deploying the template to $group (a first run takes 10-20 minutes)"
deployment="gateway-$(date +%Y%m%d%H%M%S)"
az deployment group create --name "$deployment" "${template_args[@]}" --output none
output() { az deployment group show -g "$group" -n "$deployment" --query "properties.outputs.$1.value" -o tsv; }
endpoint=$(output frontDoorEndpoint)
vault=$(output keyVaultName)
client_secret=$(output clientKeysSecret)
example=$(output exampleDeployment)
read -r -a apps <<<"$(output functionAppNames | tr '\n' ' ')"
read -r -a principals <<<"$(output functionAppPrincipalIds | tr '\n' ' ')"
read -r -a existing <<<"$(output existingAccountsCalledWithIdentity | tr '\n' ' ')"

# Existing Azure OpenAI accounts may live in other resource groups, where this template does not
# reach: grant the apps' identities there.
for scope in "${existing[@]}"; do
  for principal in "${principals[@]}"; do
    say "granting Cognitive Services OpenAI User on ${scope##*/}"
    az role assignment create --assignee-object-id "$principal" --assignee-principal-type ServicePrincipal \
      --role "Cognitive Services OpenAI User" --scope "$scope" --output none
  done
done

# A first client key, so the gateway has a caller; rotate it with az keyvault secret set.
if [ -n "$client_secret" ] && [ -n "$deployer" ]; then
  if ! az keyvault secret show --vault-name "$vault" -n "$client_secret" --output none >/dev/null 2>&1; then
    say "storing a first client key (app 'default') in $vault/$client_secret"
    key=$(head -c 32 /dev/urandom | base64 | tr -d '/+=\n' | head -c 40)
    for attempt in 1 2 3 4 5 6 7 8 9 10; do # the role assignment takes a minute or two to apply
      if az keyvault secret set --vault-name "$vault" -n "$client_secret" --value "{\"default\":\"$key\"}" --output none 2>/dev/null; then
        break
      fi
      [ "$attempt" -lt 10 ] || fail "could not store the client key in $vault (is Key Vault Secrets Officer assigned to you?)"
      sleep 15
    done
    unset key
  fi
fi

for app in "${apps[@]}"; do
  say "deploying the package to $app"
  az functionapp deployment source config-zip -g "$group" -n "$app" --src "$zip" --output none
done

say "waiting for $endpoint/healthz through Front Door (up to $((health_timeout / 60)) minutes)"
deadline=$((SECONDS + health_timeout))
until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$endpoint/healthz" || true)" = "200" ]; do
  [ $SECONDS -lt $deadline ] || fail "$endpoint/healthz did not answer 200 in time; see the apps' logs in Application Insights"
  sleep 20
done

cat <<EOF
== ready: $endpoint

Try it (the key is read from Key Vault into a variable, never printed):
  KEY=\$(az keyvault secret show --vault-name $vault -n ${client_secret:-gateway-client-keys} --query value -o tsv | sed 's/.*"default":"\([^"]*\)".*/\1/')
  curl -s "$endpoint/openai/deployments/$example/chat/completions?api-version=2024-10-21" \\
    -H "api-key: \$KEY" -H "content-type: application/json" \\
    -d '{"messages":[{"role":"user","content":"Say hello"}],"max_tokens":20}' -i

Any OpenAI SDK works with base URL $endpoint (Azure client: azure_endpoint=$endpoint).
Status: curl -H "api-key: \$KEY" -H "accept: text/html" $endpoint/status
EOF
