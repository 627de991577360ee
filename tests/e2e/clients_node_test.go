package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/aoai-failover/gateway/tests/aoaisim"
)

// throttledPrimary: the primary's limit is so small that every request is refused with 429, so
// every answer must come from the secondary.
func throttledPrimary(t *testing.T) (*gatewayProc, *region, *region) {
	t.Helper()
	swc := startRegion(t, "swc", map[string]aoaisim.Deployment{"micro": {Model: "gpt-4o-mini", TPM: 10}})
	frc := startRegion(t, "frc", map[string]aoaisim.Deployment{"big": {Model: "gpt-4o-mini", TPM: 40000, CompletionTokens: 12}})
	regions := map[string]*region{"swc": swc, "frc": frc}
	doc := newRouting().account("swc", swc).account("frc", frc).
		target("chat", "swc", "micro", 1).target("chat", "frc", "big", 2)
	gw := startGateway(t, doc.env(regions), append(doc.secrets(regions), callerKey)...)
	return gw, swc, frc
}

type sdkAnswer struct {
	Content      string          `json:"content"`
	FinishReason string          `json:"finishReason"`
	Usage        json.RawMessage `json:"usage"`
	ServedBy     string          `json:"servedBy"`
	Attempts     string          `json:"attempts"`
	Chunks       int             `json:"chunks"`
}

func TestNodeSDKThroughGateway(t *testing.T) {
	dir := filepath.Join(repoRoot(), "tests", "node")
	node, err := exec.LookPath("node")
	if _, statErr := os.Stat(filepath.Join(dir, "node_modules", "openai")); err != nil || statErr != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("node or the OpenAI Node SDK is missing (tests/run installs them): %v %v", err, statErr)
		}
		t.Skip("needs node and `npm ci` in tests/node (tests/run does both)")
	}
	gw, swc, frc := throttledPrimary(t)

	cmd := exec.Command(node, "client.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GATEWAY_URL="+gw.URL, "GATEWAY_API_KEY="+callerKey, "DEPLOYMENT=chat")
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("node client: %v\n%s\n%s", err, out, stderr)
	}
	var got struct {
		Plain    sdkAnswer `json:"plain"`
		Stream   sdkAnswer `json:"stream"`
		NotFound struct {
			IsNotFoundError bool   `json:"isNotFoundError"`
			Status          int    `json:"status"`
			Code            string `json:"code"`
		} `json:"notFound"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("client output %q: %v", out, err)
	}
	for name, a := range map[string]sdkAnswer{"plain": got.Plain, "stream": got.Stream} {
		if a.ServedBy != "frc/big" || a.Attempts == "" {
			t.Errorf("%s: served by %q after %q attempts, want frc/big", name, a.ServedBy, a.Attempts)
		}
		if a.Content == "" || a.FinishReason == "" || len(a.Usage) < 5 {
			t.Errorf("%s: incomplete answer %+v", name, a)
		}
	}
	if got.Stream.Chunks < 5 {
		t.Errorf("stream had %d chunks", got.Stream.Chunks)
	}
	if !got.NotFound.IsNotFoundError || got.NotFound.Status != 404 || got.NotFound.Code != "DeploymentNotFound" {
		t.Errorf("unknown deployment through the SDK: %+v", got.NotFound)
	}
	if st := swc.Sim.Stats()["micro"]; st.Throttled < 1 || st.Served != 0 {
		t.Errorf("primary stats %+v: it should have refused with 429", st)
	}
	if st := frc.Sim.Stats()["big"]; st.Served != 2 {
		t.Errorf("secondary served %d, want 2", st.Served)
	}
}
