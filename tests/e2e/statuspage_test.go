package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
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
