package secrets

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/aoai-failover/gateway/handler/internal/config"
)

func TestEnvKeys(t *testing.T) {
	accounts := map[string]config.Account{
		"a": {Auth: config.Auth{KeyEnv: "KEY_A"}},
		"b": {Auth: config.Auth{KeyEnv: "KEY_B"}},
	}
	env := map[string]string{"KEY_A": " secret-a ", "KEY_B": "secret-b"}
	k, err := NewEnvKeys(accounts, func(n string) string { return env[n] })
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	if err := k.Authorize(context.Background(), "a", h); err != nil || h.Get("api-key") != "secret-a" {
		t.Errorf("a: %v %q", err, h.Get("api-key"))
	}
	if err := k.Authorize(context.Background(), "zzz", http.Header{}); !errors.Is(err, ErrNoCredential) {
		t.Errorf("unknown account: %v", err)
	}
	if !k.Has("b") || k.Has("zzz") {
		t.Errorf("Has")
	}
	delete(env, "KEY_B")
	_, err = NewEnvKeys(accounts, func(n string) string { return env[n] })
	if err == nil || !strings.Contains(err.Error(), "KEY_B is not set") || strings.Contains(err.Error(), "secret-a") {
		t.Errorf("missing key: %v", err)
	}
}
