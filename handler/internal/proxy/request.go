package proxy

import (
	"encoding/json"
	"github.com/aoai-failover/gateway/handler/internal/apierr"
	"net/http"
	"strconv"
	"strings"
)

// family is the URL family a request came in on; it decides where the logical name is and how
// it is rewritten for each target.
type family int

const (
	familyDeployments family = iota // /openai/deployments/{name}/{operation...}
	familyV1                        // /openai/v1/{chat/completions,completions,embeddings,responses}
	familyResponses                 // /openai/responses
)

// v1Operations are the /openai/v1 paths routed by the body's model.
var v1Operations = map[string]bool{
	"chat/completions": true, "completions": true, "embeddings": true, "responses": true,
}

const servedPaths = "the gateway serves POST /openai/deployments/{name}/{operation}, POST /openai/v1/{chat/completions,completions,embeddings,responses} and POST /openai/responses"

// parsePath finds the family, the logical name (for the deployments family) and the operation
// path after it. It refuses anything that could make a backend see a different path than the
// one the caller named: percent-encoding, backslashes, empty, "." and ".." segments.
func parsePath(path, escaped string) (fam family, logical, rest string, perr *apierr.Error) {
	if strings.ContainsAny(escaped, "%\\") {
		return 0, "", "", apierr.New(http.StatusBadRequest, "InvalidPath", "the request path must not contain percent-encoded characters or backslashes")
	}
	if !strings.HasPrefix(path, "/openai/") {
		return 0, "", "", apierr.New(http.StatusNotFound, "NotFound", "no such path; "+servedPaths)
	}
	after := path[len("/openai/"):]
	for rest, more := after, true; more; {
		var seg string
		seg, rest, more = strings.Cut(rest, "/")
		if seg == "" || seg == "." || seg == ".." {
			return 0, "", "", apierr.New(http.StatusBadRequest, "InvalidPath", "the request path must not contain empty, '.' or '..' segments")
		}
	}
	segs := strings.Count(after, "/") + 1
	first, tail, _ := strings.Cut(after, "/")
	switch {
	case first == "deployments" && segs >= 3:
		name, _, _ := strings.Cut(tail, "/")
		return familyDeployments, name, path[len("/openai/deployments/")+len(name):], nil
	case first == "v1" && v1Operations[tail]:
		return familyV1, "", "", nil
	case first == "responses" && segs == 1:
		return familyResponses, "", "", nil
	}
	return 0, "", "", apierr.New(http.StatusNotFound, "NotFound", "no such path; "+servedPaths)
}

// bodyInfo is what the gateway reads from a JSON request body without decoding all of it.
type bodyInfo struct {
	model        string
	modelStart   int // byte span of the model's JSON string value, quotes included; -1 if absent
	modelEnd     int
	hasModel     bool
	stream       bool
	outputTokens int // max_tokens, max_completion_tokens or max_output_tokens; 0 if none
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
		case `"max_tokens"`, `"max_completion_tokens"`, `"max_output_tokens"`:
			if n, err := strconv.Atoi(string(val)); err == nil && n > info.outputTokens {
				info.outputTokens = n
			}
		}
	}
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
