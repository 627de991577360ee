package proxy

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"encoding/base64"
	"io"
	"math/rand"
	"net/http"
	"strings"
	"testing"

	"github.com/andybalholm/brotli"
)

func encode(t *testing.T, enc string, body []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	var w io.WriteCloser
	switch enc {
	case "gzip":
		w = gzip.NewWriter(&b)
	case "deflate":
		w = zlib.NewWriter(&b)
	case "raw-deflate":
		w, _ = flate.NewWriter(&b, flate.DefaultCompression)
	case "br":
		w = brotli.NewWriter(&b)
	default:
		return body
	}
	w.Write(body)
	w.Close()
	return b.Bytes()
}

// TestUsageWhateverTheEncoding: the usage of a plain answer is read whether the backend
// compressed it or not, and whether it fits the head or is longer, and the caller gets the
// backend's bytes unchanged.
func TestUsageWhateverTheEncoding(t *testing.T) {
	// Random bytes in base64: longer than the head even compressed.
	noise := make([]byte, 300<<10)
	rand.New(rand.NewSource(1)).Read(noise)
	long := `{"data":[{"b64":"` + base64.StdEncoding.EncodeToString(noise) + `"}],"usage":{"prompt_tokens":7,"total_tokens":7}}`
	for _, enc := range []string{"", "gzip", "deflate", "raw-deflate", "br"} {
		for _, body := range []string{okBody, long} {
			name := enc + "/" + map[bool]string{true: "short", false: "long"}[body == okBody]
			t.Run(name, func(t *testing.T) {
				sent := encode(t, enc, []byte(body))
				header := enc
				if enc == "raw-deflate" {
					header = "deflate"
				}
				b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", "application/json")
					if header != "" {
						w.Header().Set("Content-Encoding", header)
					}
					w.Write(sent)
				})
				log := &lines{}
				tg := newGateway(t, nil, b)
				tg.gw.opt.RequestLog = log
				req, _ := http.NewRequest(http.MethodPost, tg.srv.URL+chatPath, strings.NewReader(`{}`))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Accept-Encoding", "gzip, deflate, br")
				resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if !bytes.Equal(got, sent) || resp.Header.Get("Content-Encoding") != header {
					t.Fatalf("the caller got %d bytes (%q), the backend sent %d", len(got), resp.Header.Get("Content-Encoding"), len(sent))
				}
				tg.settle()
				want := `"usage":{"prompt":3,"completion":1,"total":4}`
				if body != okBody {
					want = `"usage":{"prompt":7,"completion":0,"total":7}`
				}
				if !strings.Contains(log.String(), want) {
					t.Fatalf("log %s, want %s", log.String(), want)
				}
			})
		}
	}
}

// BenchmarkUsageFromGzip compares the two ways to read the usage of a compressed answer: the
// gateway decoding the backend's gzip (what it does), or asking the backend for identity and
// compressing for the caller itself.
//
//	go test -run '^$' -bench BenchmarkUsageFromGzip -benchmem ./handler/internal/proxy/
func BenchmarkUsageFromGzip(b *testing.B) {
	body := []byte(okBody)
	var zipped bytes.Buffer
	zw := gzip.NewWriter(&zipped)
	zw.Write(body)
	zw.Close()
	b.Run("decode-backend-gzip", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := usageOf("gzip", zipped.Bytes()); !ok {
				b.Fatal("no usage")
			}
		}
	})
	b.Run("compress-for-caller", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := findUsage(body); !ok {
				b.Fatal("no usage")
			}
			w := gzip.NewWriter(io.Discard)
			w.Write(body)
			w.Close()
		}
	})
}
