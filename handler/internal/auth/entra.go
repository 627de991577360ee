package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// Entra verifies Entra ID bearer tokens: signature (keys from the tenant's OpenID
// configuration, refreshed hourly and on an unknown key id at most once a minute), issuer,
// audience, expiry and not-before with a minute of clock skew, and optionally app roles.
// JWT and JWKS handling is golang-jwt and keyfunc, well-kept libraries; nothing here is crypto.
type Entra struct {
	audience string
	roles    []string
	log      *slog.Logger
	client   *http.Client
	config   string // OpenID configuration URL

	state atomic.Pointer[entraKeys]
}

type entraKeys struct {
	keys    keyfunc.Keyfunc
	issuers []string
}

// Leeway is the clock skew allowed on exp and nbf.
const Leeway = time.Minute

// NewEntra verifies tokens for audience issued by tenant at authority (default
// https://login.microsoftonline.com).
func NewEntra(authority, tenant, audience string, roles []string, log *slog.Logger) *Entra {
	if authority == "" {
		authority = "https://login.microsoftonline.com"
	}
	return &Entra{
		audience: audience, roles: roles, log: log,
		client: &http.Client{Timeout: 10 * time.Second},
		config: strings.TrimSuffix(authority, "/") + "/" + tenant + "/v2.0/.well-known/openid-configuration",
	}
}

// Run discovers the signing keys, retrying with backoff until it has them; the key set then
// refreshes itself until ctx ends.
func (e *Entra) Run(ctx context.Context) {
	wait := time.Second
	for ctx.Err() == nil {
		err := e.discover(ctx)
		if err == nil {
			return
		}
		e.log.Warn("Entra ID OpenID configuration not readable; bearer tokens are refused until it is", "url", e.config, "error", err)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Minute)
	}
}

func (e *Entra) discover(ctx context.Context) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.config, nil)
	resp, err := e.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || doc.Issuer == "" || doc.JWKSURI == "" {
		return fmt.Errorf("not an OpenID configuration (issuer and jwks_uri required)")
	}
	kf, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{doc.JWKSURI}, keyfunc.Override{
		Client:            e.client,
		RefreshInterval:   time.Hour,
		RefreshUnknownKID: rate.NewLimiter(rate.Every(time.Minute), 1),
		RateLimitWaitMax:  time.Second,
		RefreshErrorHandlerFunc: func(string) func(context.Context, error) {
			return func(_ context.Context, err error) {
				e.log.Warn("could not refresh Entra ID signing keys", "error", err)
			}
		},
	})
	if err != nil {
		return err
	}
	// Entra issues v1 tokens (sts.windows.net) unless the app asks for v2; accept both.
	issuers := []string{doc.Issuer}
	if i := strings.Index(doc.Issuer, "/v2.0"); i > 0 {
		tenant := doc.Issuer[strings.LastIndex(doc.Issuer[:i], "/")+1 : i]
		issuers = append(issuers, "https://sts.windows.net/"+tenant+"/")
	}
	e.state.Store(&entraKeys{keys: kf, issuers: issuers})
	return nil
}

var errNotReady = errors.New("signing keys not loaded yet")

// Ready reports whether the signing keys have been discovered.
func (e *Entra) Ready() bool { return e.state.Load() != nil }

// Verify checks a bearer token and returns the calling app's id.
func (e *Entra) Verify(ctx context.Context, token string) (string, error) {
	st := e.state.Load()
	if st == nil {
		return "", errNotReady
	}
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(token, claims, st.keys.KeyfuncCtx(ctx),
		jwt.WithValidMethods([]string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"}),
		jwt.WithAudience(e.audience), jwt.WithLeeway(Leeway), jwt.WithExpirationRequired(), jwt.WithIssuedAt())
	if err != nil {
		return "", err
	}
	iss, _ := claims.GetIssuer()
	ok := false
	for _, want := range st.issuers {
		ok = ok || iss == want
	}
	if !ok {
		return "", fmt.Errorf("issuer %q is not the tenant's", iss)
	}
	if len(e.roles) > 0 && !hasRole(claims["roles"], e.roles) {
		return "", errors.New("none of the required app roles")
	}
	for _, k := range []string{"azp", "appid", "oid", "sub"} {
		if s, _ := claims[k].(string); s != "" {
			return s, nil
		}
	}
	return "entra", nil
}

func hasRole(v any, want []string) bool {
	have, _ := v.([]any)
	for _, h := range have {
		for _, w := range want {
			if h == w {
				return true
			}
		}
	}
	return false
}
