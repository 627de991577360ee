package telemetry

import (
	"bytes"
	"log"
	"os"
	"strings"
	"testing"
)

func TestCaptureStdLogDropsQuotedBytes(t *testing.T) {
	var out bytes.Buffer
	CaptureStdLog(NewLogger(&out, &out, 0))
	t.Cleanup(func() { log.SetOutput(os.Stderr); log.SetFlags(log.LstdFlags) })
	log.Printf("Unsolicited response received on idle HTTP channel starting with %q; err=%v", "HTTP/1.1 200 OK\r\n\r\nsecret answer text", nil)
	got := out.String()
	if strings.Contains(got, "secret answer text") || !strings.Contains(got, `"level":"WARN"`) || !strings.Contains(got, "Unsolicited response received on idle HTTP channel") {
		t.Fatalf("%s", got)
	}
}
