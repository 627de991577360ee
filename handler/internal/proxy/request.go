package proxy

import (
	"bytes"
	"encoding/json"
	"github.com/aoai-failover/gateway/handler/internal/apierr"
	"github.com/tidwall/gjson"
	"net/http"
	"strconv"
	"strings"
)

// family is the URL family a request came in on; it decides how the request is routed and
// rewritten for each target.
type family int

const (
	familyDeployments family = iota // /openai/deployments/{name}/{operation...}: by the path's name
	familyV1                        // /openai/v1/{operation}: by the body's model (JSON or multipart)
	familyResponses                 // /openai/responses?api-version=: by the body's model
	familyBound                     // /openai/[v1/]{kind}/{id}...: to the account that owns the id
	familyCollection                // /openai/[v1/]{kind}: creating or listing account-bound resources
	familyModels                    // /openai/[v1/]models[/{name}]: the gateway's own logical deployments
)

// v1Operations are the /openai/v1 paths routed by the body's model.
var v1Operations = map[string]bool{
	"chat/completions": true, "completions": true, "embeddings": true, "responses": true,
	"images/generations": true, "images/edits": true, "images/variations": true,
	"audio/transcriptions": true, "audio/translations": true, "audio/speech": true,
}

// boundKinds are the resources that live in one account: a call on one by id goes there.
var boundKinds = map[string]bool{
	"responses": true, "conversations": true, "files": true, "batches": true, "vector_stores": true,
}

// notServed are APIs the gateway refuses on purpose, with what to use instead.
var notServed = map[string]string{
	"assistants":  "the Assistants API is retired; use the Responses API (POST /openai/v1/responses) with conversations",
	"threads":     "the Assistants API (threads and runs) is retired; use the Responses API (POST /openai/v1/responses) with conversations",
	"fine_tuning": "fine-tuning is not served through the gateway; manage fine-tuning jobs on the Azure OpenAI resource itself",
	"fine-tunes":  "fine-tuning is not served through the gateway; manage fine-tuning jobs on the Azure OpenAI resource itself",
}

const servedPaths = "see the gateway's handler/README.md (What it serves) for every path it serves"

// request is where a request goes, as its path says.
type request struct {
	fam     family
	logical string // familyDeployments: the path's name; familyModels: a named model, if any
	rest    string // familyDeployments: the operation path after the name
	kind    string // familyBound and familyCollection: responses, conversations, files, ...
	id      string // familyBound: the resource's id
}

// methodsOf are the methods each family takes.
func (f family) methods() string {
	switch f {
	case familyBound:
		return "GET, POST, DELETE"
	case familyCollection:
		return "GET, POST"
	case familyModels:
		return "GET"
	}
	return "POST"
}

func (f family) allows(method string) bool {
	return strings.Contains(", "+f.methods()+",", ", "+method+",")
}

// parsePath finds where a request goes. It refuses anything that could make a backend see a
// different path than the one the caller named: percent-encoding, backslashes, empty, "." and
// ".." segments.
func parsePath(path, escaped string) (request, *apierr.Error) {
	if strings.ContainsAny(escaped, "%\\") {
		return request{}, apierr.New(http.StatusBadRequest, "InvalidPath", "the request path must not contain percent-encoded characters or backslashes")
	}
	if !strings.HasPrefix(path, "/openai/") {
		return request{}, apierr.New(http.StatusNotFound, "NotFound", "no such path; "+servedPaths)
	}
	after := path[len("/openai/"):]
	for rest, more := after, true; more; {
		var seg string
		seg, rest, more = strings.Cut(rest, "/")
		if seg == "" || seg == "." || seg == ".." {
			return request{}, apierr.New(http.StatusBadRequest, "InvalidPath", "the request path must not contain empty, '.' or '..' segments")
		}
	}
	segs := strings.Count(after, "/") + 1
	first, tail, _ := strings.Cut(after, "/")
	if first == "deployments" && segs >= 3 {
		name, _, _ := strings.Cut(tail, "/")
		return request{fam: familyDeployments, logical: name, rest: path[len("/openai/deployments/")+len(name):]}, nil
	}
	if first == "v1" && v1Operations[tail] {
		return request{fam: familyV1}, nil
	}
	if first == "responses" && segs == 1 {
		return request{fam: familyResponses}, nil
	}
	// The rest have a v1 form and an api-version form: /openai/v1/files and /openai/files.
	rel := after
	if first == "v1" {
		rel = tail
	}
	kind, more, _ := strings.Cut(rel, "/")
	id, _, _ := strings.Cut(more, "/")
	switch {
	case kind == "models":
		return request{fam: familyModels, logical: more}, nil
	case boundKinds[kind] && id != "":
		return request{fam: familyBound, kind: kind, id: id}, nil
	case boundKinds[kind] && kind != "responses":
		return request{fam: familyCollection, kind: kind}, nil
	case notServed[kind] != "":
		return request{}, apierr.New(http.StatusNotFound, "OperationNotSupported", notServed[kind])
	}
	return request{}, apierr.New(http.StatusNotFound, "NotFound", "no such path; "+servedPaths)
}

// bodyInfo is what the gateway reads from a JSON request body without decoding all of it.
type bodyInfo struct {
	model        string
	modelStart   int // byte span of the model's JSON string value, quotes included; -1 if absent
	modelEnd     int
	hasModel     bool
	stream       bool
	outputTokens int // max_tokens, max_completion_tokens or max_output_tokens; 0 if none
	// formModel: the model is a multipart form field, its span the bare value.
	formModel bool
	// boundTo is the id of a stateful resource the request builds on: a previous response, a
	// conversation (as a string or as {"id": ...}), or a batch's input file. The request
	// must go to the account that holds it.
	boundTo string
}

// scanBody reads the top-level fields the gateway needs from a JSON object. With validate it
// returns false if body is not a JSON object; without, it reads what it can of any bytes (for
// a body the gateway passes on as it is, which the backend will judge) and never fails on
// them. Values it does not need are skipped without being decoded.
func scanBody(body []byte, validate bool) (bodyInfo, bool) {
	info := bodyInfo{modelStart: -1, modelEnd: -1}
	if validate && !json.Valid(body) {
		return info, false
	}
	s := scanner{b: body}
	s.space()
	if !s.eat('{') {
		return info, false
	}
	for {
		s.space()
		if s.eat('}') {
			return info, true
		}
		if s.i >= len(s.b) {
			return info, false // only unvalidated bytes end here
		}
		s.eat(',')
		s.space()
		kStart := s.i
		s.skipString()
		key := body[kStart:s.i]
		s.space()
		s.eat(':')
		s.space()
		vStart := s.i
		s.skipValue()
		val := body[vStart:s.i]
		switch string(key) {
		case `"model"`:
			if len(val) > 0 && val[0] == '"' {
				var m string
				if json.Unmarshal(val, &m) == nil {
					info.model, info.modelStart, info.modelEnd, info.hasModel = m, vStart, s.i, true
				}
			}
		case `"stream"`:
			info.stream = string(val) == "true"
		case `"previous_response_id"`, `"input_file_id"`:
			if id := jsonString(val); id != "" {
				info.boundTo = id
			}
		case `"conversation"`:
			if id := jsonString(val); id != "" {
				info.boundTo = id
			} else if len(val) > 0 && val[0] == '{' {
				if id := gjson.GetBytes(val, "id").String(); id != "" {
					info.boundTo = id
				}
			}
		case `"max_tokens"`, `"max_completion_tokens"`, `"max_output_tokens"`:
			if n, err := strconv.Atoi(string(val)); err == nil && n > info.outputTokens {
				info.outputTokens = n
			}
		}
	}
}

// nestedStateKeys are the fields, anywhere in a request body, that name stored files and vector
// stores: a vector store made from files (file_ids), a file_search tool
// (vector_store_ids), an input part attaching a file (file_id).
var nestedStateKeys = [][]byte{[]byte(`"file_id"`), []byte(`"file_ids"`), []byte(`"vector_store_ids"`)}

// nestedStateID is the first file or vector store id a JSON body names in one of the
// nestedStateKeys, at any depth; "" when it names none. Bodies without those keys (almost all)
// cost one search for each.
func nestedStateID(body []byte) string {
	found := false
	for _, k := range nestedStateKeys {
		found = found || bytes.Contains(body, k)
	}
	if !found {
		return ""
	}
	var id string
	var walk func(v gjson.Result) bool
	walk = func(v gjson.Result) bool {
		v.ForEach(func(key, val gjson.Result) bool {
			switch key.String() {
			case "file_id":
				if val.Type == gjson.String {
					id = val.String()
				}
			case "file_ids", "vector_store_ids":
				val.ForEach(func(_, item gjson.Result) bool {
					if item.Type == gjson.String {
						id = item.String()
					}
					return id == ""
				})
			}
			if id == "" && (val.IsObject() || val.IsArray()) {
				walk(val)
			}
			return id == ""
		})
		return id == ""
	}
	walk(gjson.ParseBytes(body))
	return id
}

// jsonString is the value of a JSON string, or "" for anything else.
func jsonString(val []byte) string {
	if len(val) == 0 || val[0] != '"' {
		return ""
	}
	var v string
	if json.Unmarshal(val, &v) != nil {
		return ""
	}
	return v
}

// scanner walks JSON without reporting syntax errors: on valid JSON it finds every value's
// end, and on anything else it stays inside the bytes and always moves forward.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) eat(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

func (s *scanner) skipString() {
	s.i++ // opening quote
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '\\':
			s.i += 2
		case '"':
			s.i++
			return
		default:
			s.i++
		}
	}
	s.i = min(s.i, len(s.b)) // a final backslash stepped past the end
}

func (s *scanner) skipValue() {
	if s.i >= len(s.b) {
		return
	}
	switch s.b[s.i] {
	case '"':
		s.skipString()
	case '{', '[':
		depth := 0
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case '"':
				s.skipString()
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					s.i++
					return
				}
			}
			s.i++
		}
	default: // number, true, false, null
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return
			}
			s.i++
		}
	}
}

// withModel returns body with the model value replaced by deployment.
func withModel(body []byte, info bodyInfo, deployment string) []byte {
	q := strconv.Quote(deployment) // deployment names are plain ASCII, so Go quoting is JSON
	if info.formModel {
		q = deployment
	}
	out := make([]byte, 0, len(body)-(info.modelEnd-info.modelStart)+len(q))
	out = append(out, body[:info.modelStart]...)
	out = append(out, q...)
	return append(out, body[info.modelEnd:]...)
}

// isJSON reports whether a request's content type is JSON (or absent, as some clients send).
func isJSON(contentType string) bool {
	if contentType == "" {
		return true
	}
	mt, _, _ := strings.Cut(contentType, ";")
	mt = strings.TrimSpace(strings.ToLower(mt))
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}
