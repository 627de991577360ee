#!/usr/bin/env bash
# Deploys the gateway: checks every prerequisite first and creates nothing while one is missing,
# deploys infra/main.json (Front Door + WAF, one Flex Consumption Function App per region, Key
# Vault, state storage, Application Insights, Azure OpenAI), publishes the handler's package to
# every app, waits until Front Door answers /healthz and prints a request to try.
#
#   infra/deploy.sh -g RESOURCE_GROUP [-l LOCATION] [-p PARAMETERS_FILE] [--what-if]
#                   [--recover-deleted | --purge-deleted] [--skip-preflight]
#
#   -g RESOURCE_GROUP   where everything goes; created in -l LOCATION if it does not exist
#   -p PARAMETERS_FILE  regions, models (name, version, SKU, capacity) and routing; default
#                       infra/main.parameters.json
#   --what-if           the pre-flight and Azure's what-if only: changes nothing
#   --recover-deleted   recover the soft-deleted Key Vault and Azure OpenAI accounts that an
#                       earlier deployment into a group of this name left (keeps their secrets)
#   --purge-deleted     purge them for good instead (not possible for a purge-protected vault)
#   --skip-preflight    deploy without the pre-flight (when it is wrong about your subscription)
#
# Needs bash 3.2 or later, az (logged in: az login), Go (builds the handler and runs the
# pre-flight) and curl 7.55 or later. Every wait has a bound, in seconds: DEPLOY_TEMPLATE_TIMEOUT
# (3600), DEPLOY_PUBLISH_TIMEOUT (900 per app), DEPLOY_HEALTH_TIMEOUT (1200), DEPLOY_AZ_TIMEOUT
# (300 per az call); DEPLOY_POLL_SECONDS (15) is the pause between two looks.

if [ -z "${BASH_VERSION:-}" ]; then
  echo "deploy: run this with bash (bash infra/deploy.sh ...)" >&2
  exit 1
fi
set -euo pipefail

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  exit "${1:-2}"
}

fail() { echo "deploy: $*" >&2; exit 1; }
note() { echo "deploy: $*" >&2; }
say() { echo "== $*"; }

number() { # number NAME VALUE: VALUE must be a whole number of seconds
  case $2 in
    '' | *[!0-9]*) fail "$1 must be a whole number of seconds, not '$2'" ;;
  esac
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
group="" params="$here/main.parameters.json" location="" what_if=false resolve="" preflight=true
template_timeout=${DEPLOY_TEMPLATE_TIMEOUT:-3600}
publish_timeout=${DEPLOY_PUBLISH_TIMEOUT:-900}
health_timeout=${DEPLOY_HEALTH_TIMEOUT:-1200} # Front Door can take 10-20 minutes to serve a new endpoint
az_timeout=${DEPLOY_AZ_TIMEOUT:-300}
poll=${DEPLOY_POLL_SECONDS:-15}
number DEPLOY_TEMPLATE_TIMEOUT "$template_timeout"
number DEPLOY_PUBLISH_TIMEOUT "$publish_timeout"
number DEPLOY_HEALTH_TIMEOUT "$health_timeout"
number DEPLOY_AZ_TIMEOUT "$az_timeout"
number DEPLOY_POLL_SECONDS "$poll"

while [ $# -gt 0 ]; do
  case "$1" in
    -g | --resource-group | -p | --parameters | -l | --location)
      if [ $# -lt 2 ] || [ -z "$2" ]; then
        echo "deploy: $1 needs a value" >&2
        usage
      fi
      case "$1" in
        -g | --resource-group) group=$2 ;;
        -p | --parameters) params=$2 ;;
        *) location=$2 ;;
      esac
      shift 2
      ;;
    --what-if) what_if=true; shift ;;
    --purge-deleted | --recover-deleted)
      [ -z "$resolve" ] || fail "choose one of --purge-deleted and --recover-deleted"
      resolve=${1#--}; resolve=${resolve%-deleted}; shift
      ;;
    --skip-preflight) preflight=false; shift ;;
    -h | --help) usage 0 ;;
    *) echo "deploy: unknown argument $1" >&2; usage ;;
  esac
done
[ -n "$group" ] || { echo "deploy: -g RESOURCE_GROUP is required" >&2; usage; }
[ -f "$params" ] || fail "parameters file $params not found"
params=$(cd "$(dirname "$params")" && pwd)/$(basename "$params")

command -v az >/dev/null 2>&1 || fail "the Azure CLI (az) is not installed: https://learn.microsoft.com/cli/azure/install-azure-cli"
command -v go >/dev/null 2>&1 || fail "Go is not installed; it runs the pre-flight and builds the handler (https://go.dev/dl/)"
$what_if || command -v curl >/dev/null 2>&1 || fail "curl is not installed"

umask 077
tmp=$(mktemp -d "${TMPDIR:-/tmp}/aoai-gateway-deploy.XXXXXX")
main_pid=$$
cleanup() {
  # A subshell signalled before it has dropped the inherited trap runs this too (the watchdog
  # below is killed as soon as its command ends): only the script itself removes the directory.
  # ($BASHPID is bash 4; sh's parent is whoever runs this.)
  [ "$(exec sh -c 'echo "$PPID"')" = "$main_pid" ] || return 0
  rm -rf "$tmp"
}
trap cleanup EXIT

# bounded SECONDS WHAT COMMAND...: runs COMMAND in a process group of its own (az is a script
# around Python, and a stuck call must not outlive its bound) with no input; after SECONDS it
# ends the whole group, says so and returns 124.
bounded() {
  local limit=$1 what=$2 pid watchdog rc=0
  shift 2
  set -m
  "$@" </dev/null &
  pid=$!
  (sleep "$limit" && : >"$tmp/stopped.$pid" && kill -TERM -- "-$pid") >/dev/null 2>&1 </dev/null &
  watchdog=$!
  set +m
  wait "$pid" || rc=$?
  kill -TERM -- "-$watchdog" 2>/dev/null || true
  wait "$watchdog" 2>/dev/null || true
  if [ -e "$tmp/stopped.$pid" ]; then
    rm -f "$tmp/stopped.$pid"
    note "$what gave no answer in $limit s and was stopped"
    return 124
  fi
  return "$rc"
}

az_() { bounded "$az_timeout" "az $1 $2" az "$@"; }

rc=0
az_ account show --output none >/dev/null 2>&1 || rc=$?
case $rc in
  0) ;;
  124) fail "az account show gave no answer in $az_timeout s; check the network (or raise DEPLOY_AZ_TIMEOUT)" ;;
  *) fail "az is not logged in: run 'az login' (and 'az account set -s SUBSCRIPTION')" ;;
esac

# Whoever deploys gets Key Vault Secrets Officer, to store the client keys below.
deployer=""
if [ "$(az_ account show --query user.type -o tsv)" = "user" ]; then
  deployer=$(az_ ad signed-in-user show --query id -o tsv 2>/dev/null || true)
else
  deployer=$(az_ ad sp show --id "$(az_ account show --query user.name -o tsv)" --query id -o tsv 2>/dev/null || true)
fi
[ -n "$deployer" ] || note "could not find your object id; store the client keys in Key Vault yourself"

group_exists=true
az_ group show -n "$group" --output none >/dev/null 2>&1 || group_exists=false
if ! $group_exists; then
  [ -n "$location" ] || fail "resource group $group does not exist; give -l LOCATION to create it"
  $what_if && fail "resource group $group does not exist; what-if needs it (create it, or drop --what-if)"
fi

if $preflight; then
  say "pre-flight: checking every prerequisite (read-only) for $(basename "$params") in $group"
  (cd "$repo" && bounded 900 "building the pre-flight" go build -o "$tmp/preflight" ./infra/preflight) ||
    fail "could not build the pre-flight (infra/preflight)"
  bounded $((az_timeout * 20)) "the pre-flight" "$tmp/preflight" -template "$here/main.json" -parameters "$params" \
    -group "$group" -principal "$deployer" -resolve "$resolve" -actions "$tmp/actions" ||
    fail "the prerequisites above are missing; nothing was created. Fix them and run this again."
else
  note "--skip-preflight: deploying without checking models, quota, regions, permissions and names"
fi

template_args=(--resource-group "$group" --template-file "$here/main.json" --parameters "@$params")
[ -n "$deployer" ] && template_args+=(--parameters "deployerPrincipalId=$deployer")

if $what_if; then
  say "what-if: what the template would change in $group"
  bounded $((az_timeout * 4)) "az deployment group what-if" az deployment group what-if "${template_args[@]}"
  exit 0
fi

if ! $group_exists; then
  say "creating resource group $group in $location"
  az_ group create -n "$group" -l "$location" --output none || fail "could not create resource group $group"
fi

# Soft-deleted vaults and accounts that hold this deployment's names, as the user chose.
if [ -s "$tmp/actions" ]; then
  while IFS=$'\t' read -r verb name where rg; do
    case $verb in
      recover-vault) say "recovering Key Vault $name"
        bounded 900 "az keyvault recover" az keyvault recover -n "$name" --output none ;;
      purge-vault) say "purging Key Vault $name"
        bounded 900 "az keyvault purge" az keyvault purge -n "$name" -l "$where" --output none ;;
      recover-account) say "recovering Azure OpenAI account $name"
        bounded 900 "az cognitiveservices account recover" az cognitiveservices account recover -n "$name" -g "$rg" -l "$where" --output none ;;
      purge-account) say "purging Azure OpenAI account $name"
        bounded 900 "az cognitiveservices account purge" az cognitiveservices account purge -n "$name" -g "$rg" -l "$where" --output none ;;
      *) false ;;
    esac || fail "could not $verb $name; see the message above"
  done <"$tmp/actions"
fi

say "building the package (linux/amd64, CGO_ENABLED=0)"
zip="$repo/dist/gateway.zip"
(cd "$repo" && bounded 1800 "building the package" go run ./infra/pack -o "$zip" >/dev/null) || fail "could not build the package"

deployment="gateway-$(date +%Y%m%d%H%M%S)"
say "deploying the template to $group as $deployment (a first run takes 10-20 minutes; giving up after $((template_timeout / 60)) minutes)"
az_ deployment group create --name "$deployment" "${template_args[@]}" --no-wait --output none ||
  fail "Azure did not accept the deployment; see the message above"
deadline=$((SECONDS + template_timeout))
state=""
while :; do
  state=$(az_ deployment group show -g "$group" -n "$deployment" --query properties.provisioningState -o tsv 2>/dev/null || true)
  case $state in
    Succeeded) break ;;
    Failed | Canceled)
      az_ deployment group show -g "$group" -n "$deployment" --query properties.error -o json >&2 || true
      fail "the template deployment $deployment $state (above; every operation: az deployment operation group list -g $group -n $deployment)"
      ;;
  esac
  [ "$SECONDS" -lt "$deadline" ] ||
    fail "the template deployment $deployment is still ${state:-starting} after $((template_timeout / 60)) minutes. It goes on in Azure: follow it with 'az deployment group show -g $group -n $deployment', then run this again (with a larger DEPLOY_TEMPLATE_TIMEOUT if need be)."
  sleep "$poll"
done

output() { az_ deployment group show -g "$group" -n "$deployment" --query "properties.outputs.$1.value" -o tsv; }
endpoint=$(output frontDoorEndpoint) || fail "could not read the deployment's outputs"
vault=$(output keyVaultName)
client_secret=$(output clientKeysSecret)
example=$(output exampleDeployment)
apps=$(output functionAppNames)
principals=$(output functionAppPrincipalIds)
existing=$(output existingAccountsCalledWithIdentity)
nl='
'
summary="" failed=0

# Existing Azure OpenAI accounts may live in other resource groups, where this template does not
# reach: grant the apps' identities there.
while IFS= read -r scope; do
  [ -n "$scope" ] || continue
  while IFS= read -r principal; do
    [ -n "$principal" ] || continue
    say "granting Cognitive Services OpenAI User on ${scope##*/} to $principal"
    if ! err=$(az_ role assignment create --assignee-object-id "$principal" --assignee-principal-type ServicePrincipal \
      --role "Cognitive Services OpenAI User" --scope "$scope" --output none 2>&1); then
      case $err in
        *"already exists"* | *RoleAssignmentExists*) ;;
        *) note "$err"
          summary="$summary  FAILED  role on ${scope##*/} for $principal: grant it yourself (az role assignment create)$nl"
          failed=$((failed + 1)) ;;
      esac
    fi
  done <<EOF
$principals
EOF
done <<EOF
$existing
EOF

# A first client key, so the gateway has a caller; rotate it with az keyvault secret set.
if [ -n "$client_secret" ] && [ -n "$deployer" ]; then
  if ! az_ keyvault secret show --vault-name "$vault" -n "$client_secret" --output none >/dev/null 2>&1; then
    say "storing a first client key (app 'default') in $vault/$client_secret"
    key=$(head -c 32 /dev/urandom | base64 | tr -d '/+=\n' | head -c 40)
    stored=false
    for attempt in 1 2 3 4 5 6 7 8 9 10; do # the role assignment takes a minute or two to apply
      if az_ keyvault secret set --vault-name "$vault" -n "$client_secret" --value "{\"default\":\"$key\"}" --output none 2>/dev/null; then
        stored=true
        break
      fi
      [ "$attempt" -eq 10 ] || sleep 15
    done
    unset key
    $stored || fail "could not store the client key in $vault in 10 tries (is Key Vault Secrets Officer assigned to you?)"
  fi
fi

# publish APP: deploys the package to APP through the OneDeploy endpoint of its deployment (SCM)
# site, authenticated with your Entra token, and follows the deployment to its end. It never
# calls the app itself (its access restriction answers only Front Door), which is where
# `az functionapp deployment source config-zip` of CLI versions before May 2026 waits forever.
publish() {
  local app=$1 scm token code id status text deadline
  deadline=$((SECONDS + publish_timeout))
  scm=$(az_ functionapp show -g "$group" -n "$app" --query "hostNameSslStates[?hostType=='Repository'].name | [0]" -o tsv) || scm=""
  if [ -z "$scm" ]; then
    note "$app: could not read its deployment endpoint"
    return 1
  fi
  while :; do
    token=$(az_ account get-access-token --resource https://management.azure.com/ --query accessToken -o tsv) || token=""
    if [ -z "$token" ]; then
      note "$app: could not get an access token"
      return 1
    fi
    printf 'Authorization: Bearer %s\n' "$token" >"$tmp/auth"
    code=$(curl -sS -o "$tmp/publish.out" -w '%{http_code}' --connect-timeout 20 --max-time "$publish_timeout" -X POST \
      -H "@$tmp/auth" -H "Content-Type: application/zip" --data-binary "@$zip" \
      "https://$scm/api/publish?RemoteBuild=false" 2>"$tmp/curl.err") || code=000
    status="" text=""
    case $code in
      200 | 202)
        id=$(tr -d '"\r\n ' <"$tmp/publish.out")
        while [ -n "$id" ]; do
          code=$(curl -sS -o "$tmp/status.out" -w '%{http_code}' --connect-timeout 20 --max-time 60 \
            -H "@$tmp/auth" "https://$scm/api/deployments/$id" 2>/dev/null) || code=000
          if [ "$code" = 200 ] || [ "$code" = 202 ]; then
            body=$(tr -d '\r\n' <"$tmp/status.out")
            status=$(printf '%s' "$body" | sed -n 's/.*"status"[[:space:]]*:[[:space:]]*\(-\{0,1\}[0-9][0-9]*\).*/\1/p')
            text=$(printf '%s' "$body" | sed -n 's/.*"status_text"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p')
            case $status in
              4) return 0 ;;                # success
              3 | -1 | 5 | 6) break ;;      # failed, cancelled, conflict, partial
            esac
          fi
          [ "$SECONDS" -lt "$deadline" ] ||
            { note "$app: deployment $id was still at status ${status:-unknown} after $publish_timeout s; see the app's Deployment Center"; return 1; }
          sleep "$poll"
        done
        [ -n "$id" ] || text="no deployment id in the answer"
        note "$app: deployment ${id:-?} ended with status ${status:-?}: ${text:-no detail}"
        # A new app identity's role on its storage takes minutes to apply: the first upload
        # can fail with 403 from storage, and a later one succeeds.
        case $text in *403* | *[Ss]torage* | *[Bb]lob*) ;; *) return 1 ;; esac
        ;;
      000 | 404 | 408 | 409 | 429 | 5??)
        note "$app: the deployment endpoint answered $code ($(cat "$tmp/curl.err" "$tmp/publish.out" 2>/dev/null | tr -d '\n' | head -c 200)); trying again" ;;
      400) grep -q -i -e 403 -e storage -e blob "$tmp/publish.out" ||
        { note "$app: the package was refused: $(head -c 500 "$tmp/publish.out")"; return 1; }
        note "$app: the app cannot write its package to storage yet (its role is new); trying again" ;;
      401 | 403) note "$app: you may not deploy to it (HTTP $code); you need Contributor or Website Contributor on it"; return 1 ;;
      *) note "$app: the deployment endpoint answered HTTP $code: $(head -c 500 "$tmp/publish.out")"; return 1 ;;
    esac
    [ "$SECONDS" -lt "$deadline" ] || { note "$app: the package was not deployed within $publish_timeout s"; return 1; }
    sleep "$poll"
  done
}

published=0
while IFS= read -r app; do
  [ -n "$app" ] || continue
  say "publishing the package to $app (giving up after $((publish_timeout / 60)) minutes)"
  if publish "$app"; then
    summary="$summary  ok      $app: package deployed$nl"
    published=$((published + 1))
  else
    summary="$summary  FAILED  $app: package not deployed (the message is above); run this again to retry$nl"
    failed=$((failed + 1))
  fi
done <<EOF
$apps
EOF
rm -f "$tmp/auth"

healthy=false
if [ "$published" -gt 0 ]; then
  say "waiting for $endpoint/healthz through Front Door (up to $((health_timeout / 60)) minutes)"
  deadline=$((SECONDS + health_timeout))
  while :; do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' --connect-timeout 10 --max-time 10 "$endpoint/healthz" || true)" = "200" ]; then
      healthy=true
      break
    fi
    [ "$SECONDS" -lt "$deadline" ] || break
    sleep "$poll"
  done
  if $healthy; then
    summary="$summary  ok      Front Door answers $endpoint/healthz$nl"
  else
    summary="$summary  FAILED  $endpoint/healthz did not answer 200 in $((health_timeout / 60)) minutes: see the apps' logs in Application Insights$nl"
    failed=$((failed + 1))
  fi
fi

say "summary"
printf '%s' "$summary"
[ "$failed" -eq 0 ] || fail "$failed step(s) failed; the rest is deployed. Run this again to retry them (it is safe to repeat)."

cat <<EOF
== ready: $endpoint

Try it (the key is read from Key Vault into a variable, never printed):
  KEY=\$(az keyvault secret show --vault-name $vault -n ${client_secret:-gateway-client-keys} --query value -o tsv | sed 's/.*"default":"\([^"]*\)".*/\1/')
  curl -s "$endpoint/openai/deployments/$example/chat/completions?api-version=2024-10-21" \\
    -H "api-key: \$KEY" -H "content-type: application/json" \\
    -d '{"messages":[{"role":"user","content":"Say hello"}],"max_completion_tokens":40}' -i

Any OpenAI SDK works with base URL $endpoint (Azure client: azure_endpoint=$endpoint).
Status: curl -H "api-key: \$KEY" -H "accept: text/html" $endpoint/status
EOF
