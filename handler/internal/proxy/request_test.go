package proxy

import (
	"io"
	"strings"
	"testing"
)

func TestParsePath(t *testing.T) {
	for _, tc := range []struct {
		path   string
		want   request
		status int
		code   string
	}{
		{"/openai/deployments/chat/chat/completions", request{fam: familyDeployments, logical: "chat", rest: "/chat/completions"}, 0, ""},
		{"/openai/deployments/gpt-4o.mini_2/embeddings", request{fam: familyDeployments, logical: "gpt-4o.mini_2", rest: "/embeddings"}, 0, ""},
		{"/openai/deployments/x/audio/transcriptions", request{fam: familyDeployments, logical: "x", rest: "/audio/transcriptions"}, 0, ""},
		{"/openai/v1/chat/completions", request{fam: familyV1}, 0, ""},
		{"/openai/v1/completions", request{fam: familyV1}, 0, ""},
		{"/openai/v1/embeddings", request{fam: familyV1}, 0, ""},
		{"/openai/v1/responses", request{fam: familyV1}, 0, ""},
		{"/openai/v1/images/generations", request{fam: familyV1}, 0, ""},
		{"/openai/v1/images/edits", request{fam: familyV1}, 0, ""},
		{"/openai/v1/audio/transcriptions", request{fam: familyV1}, 0, ""},
		{"/openai/v1/audio/translations", request{fam: familyV1}, 0, ""},
		{"/openai/v1/audio/speech", request{fam: familyV1}, 0, ""},
		{"/openai/responses", request{fam: familyResponses}, 0, ""},
		{"/openai/v1/models", request{fam: familyModels}, 0, ""},
		{"/openai/models", request{fam: familyModels}, 0, ""},
		{"/openai/v1/models/chat", request{fam: familyModels, logical: "chat"}, 0, ""},
		{"/openai/v1/responses/resp_1", request{fam: familyBound, kind: "responses", id: "resp_1"}, 0, ""},
		{"/openai/v1/responses/resp_1/cancel", request{fam: familyBound, kind: "responses", id: "resp_1"}, 0, ""},
		{"/openai/v1/responses/resp_1/input_items", request{fam: familyBound, kind: "responses", id: "resp_1"}, 0, ""},
		{"/openai/responses/resp_1", request{fam: familyBound, kind: "responses", id: "resp_1"}, 0, ""},
		{"/openai/v1/conversations", request{fam: familyCollection, kind: "conversations"}, 0, ""},
		{"/openai/v1/conversations/conv_1/items", request{fam: familyBound, kind: "conversations", id: "conv_1"}, 0, ""},
		{"/openai/v1/files", request{fam: familyCollection, kind: "files"}, 0, ""},
		{"/openai/files", request{fam: familyCollection, kind: "files"}, 0, ""},
		{"/openai/v1/files/file-1/content", request{fam: familyBound, kind: "files", id: "file-1"}, 0, ""},
		{"/openai/v1/batches", request{fam: familyCollection, kind: "batches"}, 0, ""},
		{"/openai/v1/batches/batch_1/cancel", request{fam: familyBound, kind: "batches", id: "batch_1"}, 0, ""},
		{"/openai/v1/vector_stores", request{fam: familyCollection, kind: "vector_stores"}, 0, ""},
		{"/openai/v1/vector_stores/vs_1/files", request{fam: familyBound, kind: "vector_stores", id: "vs_1"}, 0, ""},
		{"/openai/v1/assistants", request{}, 404, "OperationNotSupported"},
		{"/openai/assistants/asst_1", request{}, 404, "OperationNotSupported"},
		{"/openai/v1/threads/thread_1/runs", request{}, 404, "OperationNotSupported"},
		{"/openai/v1/fine_tuning/jobs", request{}, 404, "OperationNotSupported"},
		{"/openai/deployments/chat", request{}, 404, "NotFound"},
		{"/openai/deployments/", request{}, 400, "InvalidPath"},
		{"/openai/v1/unknown", request{}, 404, "NotFound"},
		{"/openai", request{}, 404, "NotFound"},
		{"/", request{}, 404, "NotFound"},
		{"/openai/deployments/../x/y", request{}, 400, "InvalidPath"},
		{"/openai/deployments/./x/y", request{}, 400, "InvalidPath"},
		{"/openai/deployments/a/b/", request{}, 400, "InvalidPath"},
	} {
		got, perr := parsePath(tc.path, tc.path)
		if tc.status != 0 {
			if perr == nil || perr.Status != tc.status || perr.Code != tc.code {
				t.Errorf("%s: got %+v, want %d %s", tc.path, perr, tc.status, tc.code)
			}
			continue
		}
		if perr != nil || got != tc.want {
			t.Errorf("%s: got %+v %+v, want %+v", tc.path, got, perr, tc.want)
		}
	}
	if _, perr := parsePath("/openai/deployments/a/b", "/openai/deployments/a%2Fb"); perr == nil || perr.Status != 400 {
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

func TestNestedStateID(t *testing.T) {
	for body, want := range map[string]string{
		`{"name":"notes","file_ids":["file-1","file-2"]}`:                                                                    "file-1",
		`{"model":"m","tools":[{"type":"file_search","vector_store_ids":["vs_1"]}],"input":"x"}`:                             "vs_1",
		`{"model":"m","input":[{"role":"user","content":[{"type":"input_file","file_id":"file-9"},{"type":"input_text"}]}]}`: "file-9",
		`{"model":"m","input":"what is file_id \"file-1\"?"}`:                                                                "",
		`{"model":"m","file_ids":[]}`:                                                                                        "",
		`{"model":"m","tools":[{"type":"web_search"}]}`:                                                                      "",
	} {
		if got := nestedStateID([]byte(body)); got != want {
			t.Errorf("%s: %q, want %q", body, got, want)
		}
	}
}

// TestScanBodyBoundState: the ids a request builds on, wherever the API puts them.
func TestScanBodyBoundState(t *testing.T) {
	for body, want := range map[string]string{
		`{"model":"m","previous_response_id":"resp_1","input":"x"}`:    "resp_1",
		`{"model":"m","conversation":"conv_1"}`:                        "conv_1",
		`{"model":"m","conversation":{"id":"conv_2","other":1}}`:       "conv_2",
		`{"input_file_id":"file-1","endpoint":"/v1/chat/completions"}`: "file-1",
		`{"model":"m","previous_response_id":null}`:                    "",
		`{"model":"m","metadata":{"previous_response_id":"resp_not"}}`: "",
		`{"model":"m","conversation":{"items":[{"id":"msg_1"}]}}`:      "",
	} {
		if info, _ := scanBody([]byte(body), true); info.boundTo != want {
			t.Errorf("%s: bound to %q, want %q", body, info.boundTo, want)
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
