package proxy

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

// Fuzz targets for every parser of untrusted input in the forwarder. `tests/run` runs each for a
// few seconds; the seeds below run with every plain `go test`.

func FuzzParsePath(f *testing.F) {
	for _, s := range []string{
		"/openai/deployments/chat/chat/completions", "/openai/v1/chat/completions", "/openai/responses",
		"/openai/v1/responses/resp_1/cancel", "/openai/files/file-1", "/openai/v1/models", "/openai/v1/assistants",
		"/openai/deployments/../x", "/openai/deployments/a%2Fb/c", "/openai//deployments", "/openai/deployments/a/./b", "/x\\y",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		rq, perr := parsePath(path, path)
		if perr != nil {
			if perr.Status != 400 && perr.Status != 404 {
				t.Fatalf("status %d", perr.Status)
			}
			return
		}
		if rq.fam == familyBound && (rq.id == "" || rq.id == "." || rq.id == ".." || strings.Contains(rq.id, "/")) {
			t.Fatalf("%q bound to id %q", path, rq.id)
		}
		if rq.fam != familyDeployments {
			return
		}
		logical, rest := rq.logical, rq.rest
		if logical == "" || !strings.HasPrefix(rest, "/") {
			t.Fatalf("accepted %q as %q %q", path, logical, rest)
		}
		// The backend path is built from the target's name and rest: it must not climb out.
		for _, seg := range strings.Split(rest[1:], "/") {
			if seg == "" || seg == "." || seg == ".." {
				t.Fatalf("%q passes a %q segment to the backend", path, seg)
			}
		}
	})
}

func FuzzScanBody(f *testing.F) {
	for _, s := range []string{
		`{"model":"chat","stream":true,"max_tokens":5}`, `{"model":"a\"b"}`, `{"messages":[{"content":"\"model\":1"}],"model":"x"}`,
		`[]`, `{"model":}`, `{"model":"\u00e9"}`, `{"max_output_tokens":99999999999999999999}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		loose, _ := scanBody(body, false) // any bytes: must not panic or hang
		info, ok := scanBody(body, true)
		if ok && loose != info {
			t.Fatalf("valid JSON %q read as %+v unvalidated, %+v validated", body, loose, info)
		}
		if !ok || !info.hasModel {
			return
		}
		out := withModel(body, info, "real-deployment")
		if !json.Valid(out) {
			t.Fatalf("rewriting %q gave invalid JSON %q", body, out)
		}
		again, ok := scanBody(out, true)
		if !ok || again.model != "real-deployment" || again.stream != info.stream || again.outputTokens != info.outputTokens {
			t.Fatalf("rewrite of %q read back as %+v", body, again)
		}
		findUsage(body)
	})
}

func FuzzEventReader(f *testing.F) {
	for _, s := range []string{
		"data: {\"a\":1}\n\ndata: [DONE]\n\n", "data: {bad\n\n", ": c\r\n\r\nevent: x\ndata: {}\n\n", "data: {\"a\":1}", "\n\n\n",
		"data: \"" + strings.Repeat("x", 40000) + "\"\n\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		r := newEventReader(bytes.NewReader(stream), 0)
		defer r.release()
		for i := 0; i < 100000; i++ {
			ev, err := r.next()
			if err != nil {
				return
			}
			if !r.valid(ev) || !bytes.HasSuffix(ev, []byte("\n")) || len(bytes.TrimSpace(ev)) == 0 {
				t.Fatalf("passed on %q", ev)
			}
			eventUsage(ev)
			hasContent(ev)
		}
		t.Fatal("the reader did not end")
	})
}

// FuzzValidatorsAgree: the stream's JSON check (gjson) accepts exactly what encoding/json does.
func FuzzValidatorsAgree(f *testing.F) {
	for _, s := range []string{
		`{"a":[1,-0.5e+3,true,false,null,"\u00e9\n"]}`, `01`, `1.`, `.5`, `-`, `1e`, `+1`, `{"a":1,}`, `[1,]`, `tru`, `nul`,
		`"\x"`, `"\u12"`, "\"\x01\"", "\"\xff\"", ` { "a" : { } } `, `{"a" 1}`, `{a:1}`, `"a"  "b"`, "", " ",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if std, fast := json.Valid(b), gjson.ValidBytes(b); std != fast {
			t.Fatalf("%q: encoding/json says %v, gjson says %v", b, std, fast)
		}
	})
}
