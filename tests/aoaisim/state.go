package aoaisim

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The stateful v1 API, per account: what one account stores, no other account knows. Shapes
// are those the official SDKs parse (openai-go's Response, Conversation, ConversationItemList,
// FileObject, FileDeleted, Batch, VectorStore, VectorStoreDeleted; the OpenAI list envelope
// {"object":"list","data":[...],"first_id","last_id","has_more"}). A Responses turn naming a
// previous_response_id or a conversation this account does not hold gets the service's
// 400 previous_response_not_found; a call on an id it does not hold gets 404.

// maxStored bounds the objects an account keeps (the oldest are forgotten first), so that a
// long-running simulator (the demo) stays bounded.
const maxStored = 20000

type accountState struct {
	mu            sync.Mutex
	seq           int64
	order         []string // ids in creation order, for eviction
	responses     map[string]*storedResponse
	conversations map[string]*conversation
	files         map[string]*storedFile
	batches       map[string]map[string]any
	vectorStores  map[string]map[string]any
}

type storedResponse struct {
	obj        map[string]any   // the response as last answered
	final      map[string]any   // a background response: what it is once completed
	input      []map[string]any // the turn's input items
	completeAt time.Time        // a background response completes then
	background bool
}

type conversation struct {
	obj   map[string]any
	items []map[string]any
}

type storedFile struct {
	obj     map[string]any
	content []byte
}

func (f *storedFile) objOrNil() map[string]any {
	if f == nil {
		return nil
	}
	return f.obj
}

func newAccountState() *accountState {
	return &accountState{responses: map[string]*storedResponse{}, conversations: map[string]*conversation{},
		files: map[string]*storedFile{}, batches: map[string]map[string]any{}, vectorStores: map[string]map[string]any{}}
}

// remember notes a new id for eviction; the caller holds mu.
func (st *accountState) remember(id string) {
	st.order = append(st.order, id)
	for len(st.order) > maxStored {
		old := st.order[0]
		st.order = st.order[1:]
		delete(st.responses, old)
		delete(st.conversations, old)
		delete(st.files, old)
		delete(st.batches, old)
		delete(st.vectorStores, old)
	}
}

func hexID(n int) string {
	b := make([]byte, (n+1)/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

// turn is one Responses request as the account's state sees it.
type turn struct {
	id           string
	input        []map[string]any
	previous     string
	conversation string
	store        bool
	background   bool
	echo         map[string]any // request fields the response repeats
}

// beginTurn checks what a Responses request builds on and gives it its id; bad is the 400 to
// answer when the account does not hold the previous response or the conversation.
func (st *accountState) beginTurn(req map[string]any, model string) (*turn, string) {
	t := &turn{id: "resp_" + hexID(48), store: true, echo: map[string]any{}}
	if v, ok := req["store"].(bool); ok {
		t.store = v
	}
	t.background, _ = req["background"].(bool)
	t.previous, _ = req["previous_response_id"].(string)
	switch c := req["conversation"].(type) {
	case string:
		t.conversation = c
	case map[string]any:
		t.conversation, _ = c["id"].(string)
	}
	for _, k := range []string{"instructions", "metadata", "max_output_tokens", "temperature", "top_p", "tools", "tool_choice", "text", "reasoning", "parallel_tool_calls", "user", "truncation"} {
		if v, ok := req[k]; ok {
			t.echo[k] = v
		}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if t.previous != "" {
		if r := st.responses[t.previous]; r == nil {
			return nil, errorBody("invalid_request_error", "previous_response_not_found", fmt.Sprintf("Previous response with id '%s' not found.", t.previous), "previous_response_id")
		}
	}
	if t.conversation != "" && st.conversations[t.conversation] == nil {
		return nil, errorBody("invalid_request_error", "previous_response_not_found", fmt.Sprintf("Conversation with id '%s' not found.", t.conversation), "conversation")
	}
	// Vector stores a file_search tool searches, and files the input names, are the account's
	// too (the messages are assumed: the service's wording for these was not found).
	tools, _ := req["tools"].([]any)
	for _, tool := range tools {
		if m, _ := tool.(map[string]any); m["type"] == "file_search" {
			ids, _ := m["vector_store_ids"].([]any)
			for _, id := range ids {
				if s, _ := id.(string); st.vectorStores[s] == nil {
					return nil, errorBody("invalid_request_error", "", fmt.Sprintf("Vector store with id '%v' not found.", id), "tools")
				}
			}
		}
	}
	for _, id := range inputFileIDs(req["input"]) {
		if st.files[id] == nil {
			return nil, errorBody("invalid_request_error", "", fmt.Sprintf("File with id '%s' not found.", id), "input")
		}
	}
	t.input = inputItems(req["input"])
	return t, ""
}

// inputFileIDs are the file_id of every input_file (and input_image) part of a Responses input.
func inputFileIDs(in any) []string {
	var out []string
	items, _ := in.([]any)
	for _, it := range items {
		m, _ := it.(map[string]any)
		parts, _ := m["content"].([]any)
		for _, p := range parts {
			if pm, _ := p.(map[string]any); pm["type"] == "input_file" || pm["type"] == "input_image" {
				if id, _ := pm["file_id"].(string); id != "" {
					out = append(out, id)
				}
			}
		}
	}
	return out
}

// inputItems turns a Responses input (a string or a list of items and messages) into the
// items input_items lists, each with an id.
func inputItems(in any) []map[string]any {
	var out []map[string]any
	message := func(role string, content any) map[string]any {
		var parts []any
		switch c := content.(type) {
		case string:
			typ := "input_text"
			if role == "assistant" {
				typ = "output_text"
			}
			parts = []any{map[string]any{"type": typ, "text": c}}
		case []any:
			parts = c
		}
		return map[string]any{"type": "message", "id": "msg_" + hexID(48), "status": "completed", "role": role, "content": parts}
	}
	switch v := in.(type) {
	case string:
		out = append(out, message("user", v))
	case []any:
		for _, e := range v {
			m, ok := e.(map[string]any)
			if !ok {
				continue
			}
			if typ, _ := m["type"].(string); typ != "" && typ != "message" {
				item := map[string]any{}
				for k, val := range m {
					item[k] = val
				}
				if item["id"] == nil {
					item["id"] = typ[:min(2, len(typ))] + "_" + hexID(48)
				}
				out = append(out, item)
				continue
			}
			role, _ := m["role"].(string)
			if role == "" {
				role = "user"
			}
			out = append(out, message(role, m["content"]))
		}
	}
	return out
}

// saveTurn stores a response (unless the request said store: false) and adds the turn to its
// conversation.
func (st *accountState) saveTurn(t *turn, obj map[string]any, final bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if t.store {
		if r := st.responses[t.id]; r != nil {
			r.obj = obj
		} else {
			st.responses[t.id] = &storedResponse{obj: obj, input: t.input}
			st.remember(t.id)
		}
	}
	if final && t.conversation != "" {
		if c := st.conversations[t.conversation]; c != nil {
			c.items = append(c.items, t.input...)
			if out, ok := obj["output"].([]any); ok {
				for _, o := range out {
					if m, ok := o.(map[string]any); ok {
						c.items = append(c.items, m)
					}
				}
			}
		}
	}
}

// startBackground stores a background response, queued until after: its answer now.
func (st *accountState) startBackground(a *answer, after time.Duration) string {
	created := time.Now().Unix()
	queued := a.response("", created, "queued")
	final := a.response("", created, "completed")
	st.mu.Lock()
	st.responses[a.turn.id] = &storedResponse{obj: queued, final: final, input: a.turn.input, completeAt: time.Now().Add(after), background: true}
	st.remember(a.turn.id)
	st.mu.Unlock()
	b, _ := json.Marshal(queued)
	return string(b)
}

// current is a stored response as it is now: a background one completes on time. The caller
// holds mu.
func (r *storedResponse) current() map[string]any {
	if r.final != nil && !time.Now().Before(r.completeAt) && r.obj["status"] == "queued" {
		r.obj = r.final
		r.obj["completed_at"] = time.Now().Unix()
	}
	return r.obj
}

func writeObject(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	writeJSON(w, status, string(b))
}

func notFound(w http.ResponseWriter, msg string) {
	writeJSON(w, http.StatusNotFound, errorBody("invalid_request_error", "", msg, nil))
}

func badRequest(w http.ResponseWriter, msg string, param any) {
	writeJSON(w, http.StatusBadRequest, errorBody("invalid_request_error", "", msg, param))
}

// serveState answers the stateful API and the models list: rel is the path after /openai/v1/
// or /openai/ (with an api-version). It reports false for paths that are not its own.
func (s *Simulator) serveState(w http.ResponseWriter, r *http.Request, body []byte, rel, apiVersion string) bool {
	segs := strings.Split(rel, "/")
	switch segs[0] {
	case "models", "conversations", "files", "batches", "vector_stores":
	case "responses":
		if len(segs) == 1 {
			return false // creating a response is an inference call
		}
	default:
		return false
	}
	for _, seg := range segs {
		if seg == "" {
			writeJSON(w, http.StatusNotFound, notFoundBody)
			return true
		}
	}
	if _, denied := s.authenticate(r); denied != "" {
		writeJSON(w, http.StatusUnauthorized, denied)
		return true
	}
	var req map[string]any
	if len(body) > 0 && !strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/") {
		if err := json.Unmarshal(body, &req); err != nil {
			badRequest(w, "We could not parse the JSON body of your request.", nil)
			return true
		}
	}
	st := s.state
	m, n := r.Method, len(segs)
	switch {
	case segs[0] == "models" && m == http.MethodGet:
		s.models(w, segs[1:])
	case segs[0] == "responses":
		st.serveResponse(w, r, m, segs[1], segs[2:])
	case segs[0] == "conversations" && n == 1 && m == http.MethodPost:
		st.createConversation(w, req)
	case segs[0] == "conversations" && n >= 2:
		st.serveConversation(w, r, m, segs[1], segs[2:], req)
	case segs[0] == "files" && n == 1 && m == http.MethodPost:
		st.createFile(w, r, body)
	case segs[0] == "files" && n == 1 && m == http.MethodGet:
		st.list(w, r, func() []map[string]any {
			purpose := r.URL.Query().Get("purpose")
			return st.created(func(id string) (map[string]any, bool) {
				f := st.files[id]
				return f.objOrNil(), f != nil && (purpose == "" || f.obj["purpose"] == purpose)
			})
		}, "desc", 10000)
	case segs[0] == "files" && n >= 2:
		st.serveFile(w, m, segs[1], segs[2:])
	case segs[0] == "batches" && n == 1 && m == http.MethodPost:
		st.createBatch(w, req)
	case segs[0] == "batches" && n == 1 && m == http.MethodGet:
		st.list(w, r, func() []map[string]any {
			return st.created(func(id string) (map[string]any, bool) {
				b, ok := st.batches[id]
				if ok {
					advanceBatch(b)
				}
				return b, ok
			})
		}, "desc", 20)
	case segs[0] == "batches" && n >= 2:
		st.serveBatch(w, m, segs[1], segs[2:])
	case segs[0] == "vector_stores" && n == 1 && m == http.MethodPost:
		st.createVectorStore(w, req)
	case segs[0] == "vector_stores" && n == 1 && m == http.MethodGet:
		st.list(w, r, func() []map[string]any {
			return st.created(func(id string) (map[string]any, bool) { v, ok := st.vectorStores[id]; return v, ok })
		}, "desc", 20)
	case segs[0] == "vector_stores" && n == 2:
		st.serveVectorStore(w, m, segs[1], req)
	default:
		writeJSON(w, http.StatusNotFound, notFoundBody)
	}
	return true
}

// models lists the models the account's deployments run (GET /openai/v1/models), or one.
func (s *Simulator) models(w http.ResponseWriter, rest []string) {
	seen := map[string]bool{}
	var data []map[string]any
	for _, name := range s.Names() {
		m := s.deps[name].cfg.Model
		if m == "" || seen[m] {
			continue
		}
		seen[m] = true
		data = append(data, map[string]any{"id": m, "object": "model", "created": 1715558400, "owned_by": "system"})
	}
	if len(rest) == 1 {
		for _, d := range data {
			if d["id"] == rest[0] {
				writeObject(w, http.StatusOK, d)
				return
			}
		}
		writeJSON(w, http.StatusNotFound, notFoundBody)
		return
	}
	if len(rest) > 1 {
		writeJSON(w, http.StatusNotFound, notFoundBody)
		return
	}
	if data == nil {
		data = []map[string]any{}
	}
	writeObject(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}

// list answers a list in the OpenAI envelope: items (in creation order) in the order asked
// (default order), after the cursor, at most limit of them.
func (st *accountState) list(w http.ResponseWriter, r *http.Request, items func() []map[string]any, order string, limit int) {
	st.mu.Lock()
	defer st.mu.Unlock()
	writeObject(w, http.StatusOK, page(items(), r.URL.Query(), order, limit))
}

// created returns the objects of one kind in creation order; the caller holds mu.
func (st *accountState) created(get func(id string) (map[string]any, bool)) []map[string]any {
	var out []map[string]any
	for _, id := range st.order {
		if obj, ok := get(id); ok {
			out = append(out, obj)
		}
	}
	return out
}

// page is one page of items (in creation order) in the list envelope.
func page(items []map[string]any, q url.Values, defOrder string, defLimit int) map[string]any {
	order := q.Get("order")
	if order == "" {
		order = defOrder
	}
	list := make([]map[string]any, len(items))
	copy(list, items)
	if order == "desc" {
		for i, j := 0, len(list)-1; i < j; i, j = i+1, j-1 {
			list[i], list[j] = list[j], list[i]
		}
	}
	if after := q.Get("after"); after != "" {
		for i, it := range list {
			if it["id"] == after {
				list = list[i+1:]
				break
			}
		}
	}
	limit := defLimit
	if v, err := strconv.Atoi(q.Get("limit")); err == nil && v > 0 {
		limit = v
	}
	more := len(list) > limit
	if more {
		list = list[:limit]
	}
	var first, last any
	if len(list) > 0 {
		first, last = list[0]["id"], list[len(list)-1]["id"]
	}
	data := make([]any, len(list))
	for i, it := range list {
		data[i] = it
	}
	return map[string]any{"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": more}
}

// serveResponse: GET and DELETE /responses/{id}, POST .../cancel, GET .../input_items.
func (st *accountState) serveResponse(w http.ResponseWriter, r *http.Request, method, id string, rest []string) {
	missing := fmt.Sprintf("Response with id '%s' not found.", id)
	st.mu.Lock()
	resp := st.responses[id]
	var obj []byte
	if resp != nil {
		obj, _ = json.Marshal(resp.current())
	}
	st.mu.Unlock()
	switch {
	case len(rest) == 0 && method == http.MethodGet:
		if resp == nil {
			notFound(w, missing)
			return
		}
		writeJSON(w, http.StatusOK, string(obj))
	case len(rest) == 0 && method == http.MethodDelete:
		st.mu.Lock()
		_, ok := st.responses[id]
		delete(st.responses, id)
		st.mu.Unlock()
		if !ok {
			notFound(w, missing)
			return
		}
		writeObject(w, http.StatusOK, map[string]any{"id": id, "object": "response.deleted", "deleted": true})
	case len(rest) == 1 && rest[0] == "cancel" && method == http.MethodPost:
		if resp == nil {
			notFound(w, missing)
			return
		}
		st.mu.Lock()
		defer st.mu.Unlock()
		switch {
		case !resp.background:
			badRequest(w, "Cannot cancel a synchronous response.", nil)
		case resp.obj["status"] == "queued" || resp.obj["status"] == "in_progress" || resp.obj["status"] == "cancelled":
			resp.obj["status"] = "cancelled"
			resp.final = nil
			writeObject(w, http.StatusOK, resp.obj)
		default:
			badRequest(w, fmt.Sprintf("Cannot cancel a response with status '%v'.", resp.obj["status"]), nil)
		}
	case len(rest) == 1 && rest[0] == "input_items" && method == http.MethodGet:
		if resp == nil {
			notFound(w, missing)
			return
		}
		st.list(w, r, func() []map[string]any { return resp.input }, "desc", 20)
	default:
		writeJSON(w, http.StatusNotFound, notFoundBody)
	}
}

func (st *accountState) createConversation(w http.ResponseWriter, req map[string]any) {
	meta, ok := req["metadata"].(map[string]any)
	if !ok {
		meta = map[string]any{}
	}
	c := &conversation{obj: map[string]any{"id": "conv_" + hexID(48), "object": "conversation", "created_at": time.Now().Unix(), "metadata": meta}}
	c.items = inputItems(req["items"])
	out, _ := json.Marshal(c.obj)
	st.mu.Lock()
	st.conversations[c.obj["id"].(string)] = c
	st.remember(c.obj["id"].(string))
	st.mu.Unlock()
	writeJSON(w, http.StatusOK, string(out))
}

// serveConversation: GET, POST (metadata) and DELETE /conversations/{id}; GET and POST
// .../items; GET and DELETE .../items/{item}.
func (st *accountState) serveConversation(w http.ResponseWriter, r *http.Request, method, id string, rest []string, req map[string]any) {
	st.mu.Lock()
	c := st.conversations[id]
	st.mu.Unlock()
	if c == nil {
		notFound(w, fmt.Sprintf("Conversation with id '%s' not found.", id))
		return
	}
	switch {
	case len(rest) == 0 && method == http.MethodGet:
		st.mu.Lock()
		b, _ := json.Marshal(c.obj)
		st.mu.Unlock()
		writeJSON(w, http.StatusOK, string(b))
	case len(rest) == 0 && method == http.MethodPost:
		st.mu.Lock()
		if meta, ok := req["metadata"].(map[string]any); ok {
			c.obj["metadata"] = meta
		}
		b, _ := json.Marshal(c.obj)
		st.mu.Unlock()
		writeJSON(w, http.StatusOK, string(b))
	case len(rest) == 0 && method == http.MethodDelete:
		st.mu.Lock()
		delete(st.conversations, id)
		st.mu.Unlock()
		writeObject(w, http.StatusOK, map[string]any{"id": id, "object": "conversation.deleted", "deleted": true})
	case len(rest) == 1 && rest[0] == "items" && method == http.MethodGet:
		st.list(w, r, func() []map[string]any { return c.items }, "desc", 20)
	case len(rest) == 1 && rest[0] == "items" && method == http.MethodPost:
		items := inputItems(req["items"])
		if len(items) == 0 {
			badRequest(w, "Missing required parameter: 'items'.", "items")
			return
		}
		st.mu.Lock()
		c.items = append(c.items, items...)
		st.mu.Unlock()
		writeObject(w, http.StatusOK, page(items, url.Values{}, "asc", len(items)))
	case len(rest) == 2 && rest[0] == "items" && (method == http.MethodGet || method == http.MethodDelete):
		st.mu.Lock()
		defer st.mu.Unlock()
		for i, it := range c.items {
			if it["id"] != rest[1] {
				continue
			}
			if method == http.MethodGet {
				writeObject(w, http.StatusOK, it)
				return
			}
			c.items = append(c.items[:i:i], c.items[i+1:]...)
			writeObject(w, http.StatusOK, c.obj)
			return
		}
		notFound(w, fmt.Sprintf("Item with id '%s' not found.", rest[1]))
	default:
		writeJSON(w, http.StatusNotFound, notFoundBody)
	}
}

var filePurposes = map[string]bool{"assistants": true, "batch": true, "fine-tune": true, "vision": true, "user_data": true, "evals": true}

// createFile: POST /files, a multipart form with purpose and file.
func (st *accountState) createFile(w http.ResponseWriter, r *http.Request, body []byte) {
	form, err := parseForm(r.Header.Get("Content-Type"), body)
	if err != nil {
		badRequest(w, "Could not parse multipart form: "+err.Error(), nil)
		return
	}
	defer form.RemoveAll()
	purpose := first(form.Value["purpose"])
	if !filePurposes[purpose] {
		badRequest(w, fmt.Sprintf("'%s' is not one of ['assistants', 'batch', 'fine-tune', 'vision', 'user_data', 'evals'] - 'purpose'", purpose), "purpose")
		return
	}
	name, content, ok := formFile(form, "file")
	if !ok {
		badRequest(w, "Missing required parameter: 'file'.", "file")
		return
	}
	if purpose == "batch" && !validJSONL(content) {
		badRequest(w, "The file is not valid JSON Lines: every line must be a JSON object.", "file")
		return
	}
	f := &storedFile{content: content, obj: map[string]any{
		"id": "file-" + hexID(32), "object": "file", "bytes": len(content), "created_at": time.Now().Unix(),
		"filename": name, "purpose": purpose, "status": "processed", "status_details": nil, "expires_at": nil,
	}}
	st.mu.Lock()
	st.files[f.obj["id"].(string)] = f
	st.remember(f.obj["id"].(string))
	st.mu.Unlock()
	writeObject(w, http.StatusOK, f.obj)
}

func validJSONL(b []byte) bool {
	lines := 0
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil {
			return false
		}
		lines++
	}
	return lines > 0
}

// serveFile: GET and DELETE /files/{id}, GET .../content.
func (st *accountState) serveFile(w http.ResponseWriter, method, id string, rest []string) {
	st.mu.Lock()
	f := st.files[id]
	st.mu.Unlock()
	if f == nil {
		notFound(w, fmt.Sprintf("No such File object: %s", id))
		return
	}
	switch {
	case len(rest) == 0 && method == http.MethodGet:
		writeObject(w, http.StatusOK, f.obj)
	case len(rest) == 0 && method == http.MethodDelete:
		st.mu.Lock()
		delete(st.files, id)
		st.mu.Unlock()
		writeObject(w, http.StatusOK, map[string]any{"id": id, "object": "file", "deleted": true})
	case len(rest) == 1 && rest[0] == "content" && method == http.MethodGet:
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(f.content)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(f.content)
	default:
		writeJSON(w, http.StatusNotFound, notFoundBody)
	}
}

var batchEndpoints = map[string]bool{"/v1/chat/completions": true, "/v1/embeddings": true, "/v1/completions": true, "/v1/responses": true,
	"/chat/completions": true, "/embeddings": true, "/completions": true, "/responses": true}

// createBatch: POST /batches; its input file must be a batch file of this account.
func (st *accountState) createBatch(w http.ResponseWriter, req map[string]any) {
	fileID, _ := req["input_file_id"].(string)
	endpoint, _ := req["endpoint"].(string)
	window, _ := req["completion_window"].(string)
	switch {
	case fileID == "":
		badRequest(w, "Missing required parameter: 'input_file_id'.", "input_file_id")
		return
	case !batchEndpoints[endpoint]:
		badRequest(w, fmt.Sprintf("Invalid value for 'endpoint': '%s'.", endpoint), "endpoint")
		return
	case window != "24h":
		badRequest(w, fmt.Sprintf("Invalid value for 'completion_window': '%s'. Supported values are: '24h'.", window), "completion_window")
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	f := st.files[fileID]
	if f == nil {
		badRequest(w, fmt.Sprintf("Invalid 'input_file_id': '%s'. The file does not exist.", fileID), "input_file_id")
		return
	}
	if f.obj["purpose"] != "batch" {
		badRequest(w, fmt.Sprintf("Invalid 'input_file_id': '%s'. The file's purpose must be 'batch'.", fileID), "input_file_id")
		return
	}
	lines := 0
	for _, l := range strings.Split(string(f.content), "\n") {
		if strings.TrimSpace(l) != "" {
			lines++
		}
	}
	now := time.Now().Unix()
	b := map[string]any{
		"id": "batch_" + newID(), "object": "batch", "endpoint": endpoint, "errors": nil, "input_file_id": fileID,
		"completion_window": window, "status": "validating", "output_file_id": nil, "error_file_id": nil,
		"created_at": now, "in_progress_at": nil, "expires_at": now + 24*3600, "finalizing_at": nil, "completed_at": nil,
		"failed_at": nil, "expired_at": nil, "cancelling_at": nil, "cancelled_at": nil,
		"request_counts": map[string]any{"total": lines, "completed": 0, "failed": 0}, "metadata": req["metadata"],
	}
	st.batches[b["id"].(string)] = b
	st.remember(b["id"].(string))
	out, _ := json.Marshal(b)
	writeJSON(w, http.StatusOK, string(out))
}

// advanceBatch moves a batch on by one step each time it is looked at: validating becomes
// in_progress, cancelling becomes cancelled. The caller holds mu.
func advanceBatch(b map[string]any) map[string]any {
	now := time.Now().Unix()
	switch b["status"] {
	case "validating":
		b["status"], b["in_progress_at"] = "in_progress", now
	case "cancelling":
		b["status"], b["cancelled_at"] = "cancelled", now
	}
	return b
}

// serveBatch: GET /batches/{id}, POST .../cancel.
func (st *accountState) serveBatch(w http.ResponseWriter, method, id string, rest []string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	b := st.batches[id]
	if b == nil {
		notFound(w, fmt.Sprintf("Batch with id '%s' not found.", id))
		return
	}
	switch {
	case len(rest) == 0 && method == http.MethodGet:
		out, _ := json.Marshal(advanceBatch(b))
		writeJSON(w, http.StatusOK, string(out))
	case len(rest) == 1 && rest[0] == "cancel" && method == http.MethodPost:
		switch b["status"] {
		case "validating", "in_progress", "finalizing":
			b["status"], b["cancelling_at"] = "cancelling", time.Now().Unix()
		case "cancelling":
		default:
			writeJSON(w, http.StatusConflict, errorBody("invalid_request_error", "", fmt.Sprintf("Cannot cancel a batch with status '%v'.", b["status"]), nil))
			return
		}
		out, _ := json.Marshal(b)
		writeJSON(w, http.StatusOK, string(out))
	default:
		writeJSON(w, http.StatusNotFound, notFoundBody)
	}
}

// createVectorStore: POST /vector_stores; its files must be this account's.
func (st *accountState) createVectorStore(w http.ResponseWriter, req map[string]any) {
	st.mu.Lock()
	defer st.mu.Unlock()
	ids, _ := req["file_ids"].([]any)
	size := 0
	for _, v := range ids {
		id, _ := v.(string)
		f := st.files[id]
		if f == nil {
			badRequest(w, fmt.Sprintf("File '%s' not found.", id), "file_ids")
			return
		}
		size += len(f.content)
	}
	meta, ok := req["metadata"].(map[string]any)
	if !ok {
		meta = map[string]any{}
	}
	now := time.Now().Unix()
	v := map[string]any{"id": "vs_" + hexID(24), "object": "vector_store", "created_at": now, "name": req["name"], "usage_bytes": size,
		"status": "completed", "expires_after": req["expires_after"], "expires_at": nil, "last_active_at": now, "metadata": meta}
	v["file_counts"] = map[string]any{"in_progress": 0, "completed": len(ids), "failed": 0, "cancelled": 0, "total": len(ids)}
	if v["name"] == nil {
		v["name"] = ""
	}
	st.vectorStores[v["id"].(string)] = v
	st.remember(v["id"].(string))
	out, _ := json.Marshal(v)
	writeJSON(w, http.StatusOK, string(out))
}

// serveVectorStore: GET, POST (name, metadata) and DELETE /vector_stores/{id}.
func (st *accountState) serveVectorStore(w http.ResponseWriter, method, id string, req map[string]any) {
	st.mu.Lock()
	defer st.mu.Unlock()
	v := st.vectorStores[id]
	if v == nil {
		notFound(w, fmt.Sprintf("No vector store found with id '%s'.", id))
		return
	}
	switch method {
	case http.MethodGet:
	case http.MethodPost:
		if name, ok := req["name"].(string); ok {
			v["name"] = name
		}
		if meta, ok := req["metadata"].(map[string]any); ok {
			v["metadata"] = meta
		}
		v["last_active_at"] = time.Now().Unix()
	case http.MethodDelete:
		delete(st.vectorStores, id)
		writeObject(w, http.StatusOK, map[string]any{"id": id, "object": "vector_store.deleted", "deleted": true})
		return
	default:
		writeJSON(w, http.StatusNotFound, notFoundBody)
		return
	}
	out, _ := json.Marshal(v)
	writeJSON(w, http.StatusOK, string(out))
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// formFile reads a form's file field (field, or field[] as the SDKs send arrays).
func formFile(form *multipart.Form, field string) (name string, content []byte, ok bool) {
	for _, f := range []string{field, field + "[]"} {
		if fhs := form.File[f]; len(fhs) > 0 {
			rd, err := fhs[0].Open()
			if err != nil {
				return "", nil, false
			}
			defer rd.Close()
			b := make([]byte, fhs[0].Size)
			if _, err := io.ReadFull(rd, b); err != nil {
				return "", nil, false
			}
			return fhs[0].Filename, b, true
		}
	}
	return "", nil, false
}
