package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aoai-failover/gateway/tests/aoaisim"
)

// TestStatusPageInChromium loads /status as a browser does, with one target throttled, and
// checks what the rendered page shows; the screenshot is kept for a person to look at.
func TestStatusPageInChromium(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium is missing (tests/run installs Debian's chromium)")
		}
		t.Skip("needs Debian's chromium (tests/run installs it)")
	}
	gw, _, _ := twoRegions(t)
	dir := t.TempDir()
	browse := func(args ...string) []byte {
		base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
			"--disable-background-networking", "--disable-component-update", "--disable-sync",
			"--user-data-dir=" + filepath.Join(dir, "profile"), "--virtual-time-budget=1500"}
		out, err := exec.Command(chromium, append(append(base, args...), gw.URL+"/status")...).Output()
		if err != nil {
			t.Fatalf("chromium %v: %v", args, err)
		}
		return out
	}
	// The primary's token quota holds about nine requests, then it is throttled for most of a
	// minute; should the throttle lapse before the browser renders, throttle it again.
	var dom string
	for try := 0; try < 3; try++ {
		for i := 0; i < 12; i++ {
			chat(t, gw.URL, "chat", smallChat)
		}
		dom = string(browse("--dump-dom"))
		if strings.Contains(dom, `class="state throttled"`) {
			break
		}
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`data-target="swc/micro"[\s\S]*?class="state throttled"[^>]*>throttled for \d+\.\d s<`),
		regexp.MustCompile(`data-target="frc/big"[\s\S]*?class="state available"`),
		regexp.MustCompile(`state store <b[^>]*>memory: healthy`),
		regexp.MustCompile(`data-target="frc/big"[\s\S]*?\d+% \(\d+\)`),
	} {
		if !want.MatchString(dom) {
			t.Errorf("the page does not show %s:\n%s", want, dom)
		}
	}
	shot := filepath.Join(repoRoot(), "tests", ".cache", "status-page.png")
	os.MkdirAll(filepath.Dir(shot), 0o755)
	browse("--screenshot="+shot, "--window-size=1280,300", "--hide-scrollbars")
	png, err := os.ReadFile(shot)
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) || len(png) < 10_000 {
		t.Errorf("screenshot %s: %v, %d bytes", shot, err, len(png))
	}
	if strings.Contains(dom, "http://") && strings.Contains(dom, "<link") {
		t.Errorf("the page loads external assets")
	}
}

// TestStatusPageDeprioritised: a primary whose last answer said no requests are left in its
// window is passed over by routing (throttle.routeByRemaining, on by default), and /status says
// so, "deprioritised" with when it ends, rather than "available"; the page shows it too.
func TestStatusPageDeprioritised(t *testing.T) {
	// 6 RPM: one request per 10 s bucket, so the first answer reports 0 requests left.
	swc := startRegion(t, "swc", map[string]aoaisim.Deployment{"micro": {Model: "gpt-4o-mini", TPM: 100000, RPM: 6}})
	frc := startRegion(t, "frc", map[string]aoaisim.Deployment{"big": {Model: "gpt-4o-mini", TPM: 100000}})
	regions := map[string]*region{"swc": swc, "frc": frc}
	doc := newRouting().account("swc", swc).account("frc", frc).target("chat", "swc", "micro", 1).target("chat", "frc", "big", 2)
	gw := startGateway(t, doc.env(regions), doc.secrets(regions)...)

	first, _ := chat(t, gw.URL, "chat", smallChat)
	if first.StatusCode != 200 || first.Header.Get("x-served-by") != "swc/micro" || first.Header.Get("x-ratelimit-remaining-requests") != "0" {
		t.Fatalf("first request: %d by %s, %s requests left", first.StatusCode, first.Header.Get("x-served-by"), first.Header.Get("x-ratelimit-remaining-requests"))
	}
	second, _ := chat(t, gw.URL, "chat", smallChat)
	if by := second.Header.Get("x-served-by"); second.StatusCode != 200 || by != "frc/big" || second.Header.Get("x-gateway-attempts") != "1" {
		t.Fatalf("routing did not go around the primary: %d by %s after %s attempts", second.StatusCode, by, second.Header.Get("x-gateway-attempts"))
	}

	resp, err := http.Get(gw.URL + "/status")
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Deployments map[string][]struct {
			State struct {
				Target             string     `json:"target"`
				State              string     `json:"state"`
				DeprioritisedUntil *time.Time `json:"deprioritisedUntil"`
				RemainingRequests  *int64     `json:"remainingRequests"`
			} `json:"state"`
		} `json:"deployments"`
	}
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil || len(st.Deployments["chat"]) != 2 {
		t.Fatalf("/status: %v %+v", err, st)
	}
	primary, secondary := st.Deployments["chat"][0].State, st.Deployments["chat"][1].State
	if primary.Target != "swc/micro" || primary.State != "deprioritised" || primary.DeprioritisedUntil == nil ||
		time.Until(*primary.DeprioritisedUntil) <= 0 || time.Until(*primary.DeprioritisedUntil) > 10*time.Second ||
		primary.RemainingRequests == nil || *primary.RemainingRequests != 0 {
		t.Errorf("primary in /status: %+v", primary)
	}
	if secondary.Target != "frc/big" || secondary.State != "available" || secondary.DeprioritisedUntil != nil {
		t.Errorf("secondary in /status: %+v", secondary)
	}

	chromium, err := exec.LookPath("chromium")
	if err != nil {
		return // the page itself is checked where chromium is (TestStatusPageInChromium says so)
	}
	dir := t.TempDir()
	out, err := exec.Command(chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+filepath.Join(dir, "profile"), "--virtual-time-budget=1500", "--dump-dom", gw.URL+"/status").Output()
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`data-target="swc/micro"[\s\S]*?class="state deprioritised"[^>]*>deprioritised for \d+\.\d s</span><div class="note">low remaining budget`),
		regexp.MustCompile(`data-target="frc/big"[\s\S]*?class="state available"`),
	} {
		if !want.MatchString(string(out)) {
			t.Errorf("the page does not show %s:\n%s", want, out)
		}
	}
}
