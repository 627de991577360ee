package proxy

import (
	"io"
	"strings"
	"testing"
)

func TestParsePath(t *testing.T) {
	for _, tc := range []struct {
		path    string
		fam     family
		logical string
		rest    string
		status  int
	}{
		{"/openai/deployments/chat/chat/completions", familyDeployments, "chat", "/chat/completions", 0},
		{"/openai/deployments/gpt-4o.mini_2/embeddings", familyDeployments, "gpt-4o.mini_2", "/embeddings", 0},
		{"/openai/deployments/x/audio/transcriptions", familyDeployments, "x", "/audio/transcriptions", 0},
		{"/openai/v1/chat/completions", familyV1, "", "", 0},
		{"/openai/v1/completions", familyV1, "", "", 0},
		{"/openai/v1/embeddings", familyV1, "", "", 0},
		{"/openai/v1/responses", familyV1, "", "", 0},
		{"/openai/responses", familyResponses, "", "", 0},
		{"/openai/deployments/chat", 0, "", "", 404},
		{"/openai/deployments/", 0, "", "", 400},
		{"/openai/v1/models", 0, "", "", 404},
		{"/openai/v1/responses/resp_1", 0, "", "", 404},
		{"/openai/responses/x", 0, "", "", 404},
		{"/openai", 0, "", "", 404},
		{"/", 0, "", "", 404},
		{"/openai/deployments/../x/y", 0, "", "", 400},
		{"/openai/deployments/./x/y", 0, "", "", 400},
		{"/openai/deployments/a/b/", 0, "", "", 400},
	} {
		fam, logical, rest, perr := parsePath(tc.path, tc.path)
		if tc.status != 0 {
			if perr == nil || perr.Status != tc.status {
				t.Errorf("%s: got %+v, want status %d", tc.path, perr, tc.status)
			}
			continue
		}
		if perr != nil || fam != tc.fam || logical != tc.logical || rest != tc.rest {
			t.Errorf("%s: got %v %q %q %+v", tc.path, fam, logical, rest, perr)
		}
	}
	if _, _, _, perr := parsePath("/openai/deployments/a/b", "/openai/deployments/a%2Fb"); perr == nil || perr.Status != 400 {
		t.Errorf("percent-encoding accepted")
	}
}

func TestScanBody(t *testing.T) {
	for _, tc := range []struct {
		body   string
		ok     bool
		model  string
		stream bool
		tokens int
	}{
		{`{"model":"chat","stream":true,"max_tokens":50}`, true, "chat", true, 50},
		{` { "messages" : [ {"content":"\"model\":\"evil\""} ], "model" : "m\u0031" } `, true, "m1", false, 0},
		{`{"nested":{"model":"no","stream":true},"model":"yes"}`, true, "yes", false, 0},
		{`{"max_completion_tokens":300,"stream":false}`, true, "", false, 300},
		{`{"max_output_tokens":70,"input":[1,2,{"a":[{}]}]}`, true, "", false, 70},
		{`{"model":null,"stream":"true"}`, true, "", false, 0},
		{`{"max_tokens":1e3}`, true, "", false, 0},
		{`{}`, true, "", false, 0},
		{`[]`, false, "", false, 0},
		{`"model"`, false, "", false, 0},
		{`{"model":"x"`, false, "", false, 0},
		{``, false, "", false, 0},
	} {
		info, ok := scanBody([]byte(tc.body), true)
		if ok != tc.ok || info.model != tc.model || info.stream != tc.stream || info.outputTokens != tc.tokens {
			t.Errorf("%s: got ok=%v %+v", tc.body, ok, info)
		}
		if ok && info.hasModel {
			out := string(withModel([]byte(tc.body), info, "real-dep"))
			again, ok2 := scanBody([]byte(out), true)
			if !ok2 || again.model != "real-dep" {
				t.Errorf("%s: rewrite gave %s", tc.body, out)
			}
		}
	}
}

func TestEventReader(t *testing.T) {
	in := "data: {\"a\":1}\n\n" +
		"\n\n" + // stray blank lines
		"event: x\r\ndata: {\"b\":2}\r\n\r\n" +
		": comment\n\n" +
		"data: [DONE]\n\n" +
		"data:[DONE] \r\n\r\n" + // no space after the colon, one before the line end
		"data: {\"x\":\"data: [DONE]\"}\n\n" + // [DONE] inside JSON ends nothing
		"data: {\"tail\":true}\n" // unfinished last event at EOF
	r := newEventReader(strings.NewReader(in), 0)
	var got []string
	for {
		ev, err := r.next()
		if err != nil {
			if err != io.EOF {
				t.Fatal(err)
			}
			break
		}
		if r.done {
			ev = append([]byte("DONE "), ev...)
		}
		got = append(got, string(ev))
	}
	want := []string{"data: {\"a\":1}\n\n", "event: x\r\ndata: {\"b\":2}\r\n\n", ": comment\n\n", "DONE data: [DONE]\n\n",
		"DONE data:[DONE] \r\n\n", "data: {\"x\":\"data: [DONE]\"}\n\n", "data: {\"tail\":true}\n\n"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got %q\nwant %q", got, want)
	}

	big := "data: \"" + strings.Repeat("x", 1000) + "\"\n\n"
	if _, err := newEventReader(strings.NewReader(big), 1000).next(); err != errEventTooLarge {
		t.Errorf("oversized event: %v", err)
	}
	if _, err := newEventReader(strings.NewReader(big), 2000).next(); err != nil {
		t.Errorf("event within a larger limit: %v", err)
	}
	// An event that is not JSON is an error, never dropped: the caller would lose its text.
	r = newEventReader(strings.NewReader("data: {\"a\":1}\n\ndata: {broken\n\ndata: [DONE]\n\n"), 0)
	if _, err := r.next(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.next(); err != errBadEvent {
		t.Errorf("malformed event: %v, want errBadEvent", err)
	}
}

func TestFindUsage(t *testing.T) {
	for _, tc := range []struct {
		body string
		want int
	}{
		{okBody, 4},
		{`{"usage":null}`, 0},
		{`{"response":{"usage":{"input_tokens":3,"output_tokens":4}}}`, 7},
		{`{"choices":[{"text":"\"usage\""}]}`, 0},
		{`garbage "usage": {`, 0},
	} {
		u, ok := findUsage([]byte(tc.body))
		got := 0
		if ok {
			got = u.Total
		}
		if got != tc.want {
			t.Errorf("%s: total %d, want %d", tc.body, got, tc.want)
		}
	}
}
