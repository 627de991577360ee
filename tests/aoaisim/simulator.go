// Package aoaisim simulates Azure OpenAI closely enough to test a gateway against: per-deployment
// token (rolling 60 s window of estimated cost) and request (RPM/6 per 10 s) limits with the
// service's 429 headers and bodies, x-ratelimit-remaining-* on success, the service's exact SSE
// chunk sequence, latency per token, both auth modes, content-filter and context-length 400s,
// the 400 OperationNotSupported for an operation the deployment's model does not serve, and
// injectable faults. It counts what each deployment served and refused.
//
// Each Simulator is one account with its own state, as the stateful API keeps it (state.go):
// stored responses, conversations, files, batches and vector stores live in the account that
// created them, and another account answers that they do not exist. Images and audio are served
// on the deployments and the v1 routes (media.go). Every request is recorded (record.go).
package aoaisim

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"time"
)

// Config describes one simulated Azure OpenAI account.
type Config struct {
	// APIKey is the api-key accepted; empty accepts any non-empty key.
	APIKey string `json:"apiKey,omitempty"`
	// AcceptBearer also accepts "Authorization: Bearer <token>" (Entra ID).
	AcceptBearer bool `json:"acceptBearer,omitempty"`
	// BearerAudience, if set, is the audience a bearer token (a JWT) must name, as Azure
	// OpenAI requires https://cognitiveservices.azure.com.
	BearerAudience string `json:"bearerAudience,omitempty"`
	// Region is returned in x-ms-region.
	Region      string                `json:"region,omitempty"`
	Deployments map[string]Deployment `json:"deployments"`
	// Gzip compresses JSON answers for callers that accept gzip, as the service does.
	Gzip bool `json:"gzip,omitempty"`
	// MaxRecords is how many requests are recorded (Records): 0 means 2,000, negative none.
	MaxRecords int `json:"maxRecords,omitempty"`
	// BackgroundTime is how long a background response stays queued before it completes;
	// default 1 s.
	BackgroundTime Duration `json:"backgroundTime,omitempty"`
}

// Deployment describes one model deployment of the account.
type Deployment struct {
	Model            string   `json:"model,omitempty"`
	TPM              int      `json:"tpm,omitempty"` // 0: unlimited
	RPM              int      `json:"rpm,omitempty"` // 0: 6 per 1,000 TPM like Azure; unlimited with TPM 0
	TimeToFirstToken Duration `json:"timeToFirstToken,omitempty"`
	PerToken         Duration `json:"perToken,omitempty"`
	CompletionTokens int      `json:"completionTokens,omitempty"` // tokens an answer has; default 20
	Fault            string   `json:"fault,omitempty"`
	ContextWindow    int      `json:"contextWindow,omitempty"` // default 128,000
	// Quota, if set, applies Azure's admission rules as tests/fleetbench models them (see
	// quota.go) instead of the default limits.
	Quota *Quota `json:"quota,omitempty"`
}

// Duration is a time.Duration written in JSON as "150ms", or as a number of milliseconds.
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var ms float64
	if json.Unmarshal(b, &ms) == nil {
		*d = Duration(ms * float64(time.Millisecond))
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: want a string like \"150ms\" or a number of ms, got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	*d = Duration(v)
	return nil
}

// Stats counts what a deployment did.
type Stats struct {
	Served       int
	Throttled    int
	Faulted      int
	Unauthorized int
	BadRequest   int
	Requests     int
	PromptTokens int
	// CompletionTokens served.
	CompletionTokens int
	LastAuth         string // "api-key" or "bearer"; never the credential
	LastPath         string
	LastModel        string
}

// Simulator is one simulated account. It is safe for concurrent use.
type Simulator struct {
	cfg     Config
	mu      sync.Mutex
	deps    map[string]*deployment
	records *recordLog
	state   *accountState
}

type deployment struct {
	cfg            Deployment
	fault          string
	throttledUntil time.Time // Throttle: every request is refused with 429 until then
	tokens         []spend   // accepted estimated costs in the rolling minute, oldest first
	reqWin         time.Time
	reqN           int
	stats          Stats
	// limiter is the deployment's admission under cfg.Quota (quota.go); nil without one.
	limiter *Limiter
}

type spend struct {
	at   time.Time
	cost int
}

// New validates cfg and returns a Simulator.
func New(cfg Config) (*Simulator, error) {
	if len(cfg.Deployments) == 0 {
		return nil, fmt.Errorf("aoaisim: no deployments")
	}
	if cfg.BackgroundTime <= 0 {
		cfg.BackgroundTime = Duration(time.Second)
	}
	s := &Simulator{cfg: cfg, deps: map[string]*deployment{}, records: newRecordLog(cfg.MaxRecords), state: newAccountState()}
	for name, d := range cfg.Deployments {
		if _, err := parseFault(d.Fault); err != nil {
			return nil, fmt.Errorf("aoaisim: deployment %s: %w", name, err)
		}
		if d.CompletionTokens <= 0 {
			d.CompletionTokens = 20
		}
		if d.ContextWindow <= 0 {
			d.ContextWindow = 128000
		}
		if d.RPM == 0 && d.TPM > 0 {
			d.RPM = max(1, d.TPM*6/1000)
		}
		s.deps[name] = &deployment{cfg: d, fault: d.Fault}
		if d.Quota != nil && (d.TPM > 0 || d.RPM > 0) {
			s.deps[name].limiter = NewLimiter(d.TPM, d.RPM, d.Quota.window(), d.Quota.Empty, time.Now())
		}
	}
	return s, nil
}

// Start serves a new Simulator on a loopback httptest.Server; the caller closes the server.
func Start(cfg Config) (*Simulator, *httptest.Server, error) {
	s, err := New(cfg)
	if err != nil {
		return nil, nil, err
	}
	return s, httptest.NewServer(s), nil
}

// SetFault sets the fault every request to the deployment gets ("" for none).
func (s *Simulator) SetFault(deployment, fault string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d := s.deps[deployment]; d != nil {
		d.fault = fault
	}
}

// Throttle makes the deployment refuse every request with the service's 429 for d, with
// retry-after (and retry-after-ms) saying how long is left; d <= 0 lifts it. It is the way to
// force 429s whatever the request costs; the quotas (TPM, RPM) make them by usage.
func (s *Simulator) Throttle(deployment string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if dep := s.deps[deployment]; dep != nil {
		dep.throttledUntil = time.Now().Add(d)
	}
}

// Stats returns a copy of every deployment's counters.
func (s *Simulator) Stats() map[string]Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]Stats, len(s.deps))
	for name, d := range s.deps {
		out[name] = d.stats
	}
	return out
}

// ResetStats zeroes the counters (not the rate-limit windows).
func (s *Simulator) ResetStats() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.deps {
		d.stats = Stats{}
	}
}

func (s *Simulator) count(d *deployment, f func(*Stats)) {
	s.mu.Lock()
	f(&d.stats)
	s.mu.Unlock()
}

// operation is what a request asks for.
type operation struct {
	kind       string // chat, completions, embeddings, responses, images, transcriptions, translations, speech
	name       string // operation name in 429 messages
	apiVersion string
	multipart  bool // the body is a multipart form (its "model" field names the deployment on v1)
}

var operations = map[string]operation{
	"chat/completions":     {"chat", "ChatCompletions_Create", "", false},
	"completions":          {"completions", "Completions_Create", "", false},
	"embeddings":           {"embeddings", "Embeddings_Create", "", false},
	"responses":            {"responses", "Responses_Create", "", false},
	"images/generations":   {"images", "ImageGenerations_Create", "", false},
	"images/edits":         {"images", "ImageEdits_Create", "", true},
	"audio/transcriptions": {"transcriptions", "Transcriptions_Create", "", true},
	"audio/translations":   {"translations", "Translations_Create", "", true},
	"audio/speech":         {"speech", "Speech_Create", "", false},
}

const notFoundBody = `{"error":{"code":"404","message":"Resource not found"}}`

// ServeHTTP answers like Azure OpenAI, and records the request and its answer.
func (s *Simulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := newID()
	rec := &Record{ID: id, At: time.Now(), Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery,
		APIKey: r.Header.Get("api-key"), Authorization: r.Header.Get("Authorization"), ContentType: r.Header.Get("Content-Type"),
		RequestHeader: r.Header.Clone()}
	s.records.add(rec)
	rw := &recorder{w: w, log: s.records, rec: rec, gzipOK: s.cfg.Gzip && acceptsGzip(r)}
	defer rw.finish()
	w = rw
	h := w.Header()
	h.Set("apim-request-id", id)
	h.Set("x-request-id", id)
	if s.cfg.Region != "" {
		h.Set("x-ms-region", s.cfg.Region)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 32<<20))
	if err != nil {
		return
	}
	rw.body = body
	path := r.URL.Path
	apiVersion := r.URL.Query().Get("api-version")
	// The stateful API and the models list: /openai/v1/{kind}... and /openai/{kind}...?api-version=.
	if rel, ok := strings.CutPrefix(path, "/openai/v1/"); ok {
		if s.serveState(w, r, body, rel, "v1") {
			return
		}
	} else if rel, ok := strings.CutPrefix(path, "/openai/"); ok && apiVersion != "" && !strings.HasPrefix(rel, "deployments/") && rel != "responses" {
		if s.serveState(w, r, body, rel, apiVersion) {
			return
		}
	}
	if r.Method != http.MethodPost {
		writeJSON(w, http.StatusNotFound, notFoundBody)
		return
	}
	// Route: the deployment comes from the path or, on the v1 and responses routes, the body.
	var op operation
	var depName string
	fromBody := false
	switch {
	case strings.HasPrefix(path, "/openai/deployments/"):
		rest := strings.TrimPrefix(path, "/openai/deployments/")
		name, opPath, ok := strings.Cut(rest, "/")
		o, known := operations[opPath]
		if !ok || !known || o.kind == "responses" || apiVersion == "" {
			writeJSON(w, http.StatusNotFound, notFoundBody)
			return
		}
		op, depName = o, name
	case strings.HasPrefix(path, "/openai/v1/"):
		o, known := operations[strings.TrimPrefix(path, "/openai/v1/")]
		if !known {
			writeJSON(w, http.StatusNotFound, notFoundBody)
			return
		}
		op, fromBody, apiVersion = o, true, "v1"
	case path == "/openai/responses" && apiVersion != "":
		op, fromBody = operations["responses"], true
	default:
		writeJSON(w, http.StatusNotFound, notFoundBody)
		return
	}
	op.apiVersion = apiVersion

	authKind, authBody := s.authenticate(r)
	var req map[string]any
	var jsonErr error
	var form *multipart.Form
	var bodyModel string
	if op.multipart {
		form, jsonErr = parseForm(r.Header.Get("Content-Type"), body)
		if form != nil {
			defer form.RemoveAll()
			if v := form.Value["model"]; len(v) > 0 {
				bodyModel = v[0]
			}
		}
	} else {
		jsonErr = json.Unmarshal(body, &req)
		bodyModel, _ = req["model"].(string)
	}
	if fromBody {
		depName = bodyModel
	}
	saw(w, depName, bodyModel)
	if authBody != "" {
		s.mu.Lock()
		if d := s.deps[depName]; d != nil {
			d.stats.Unauthorized++
		}
		s.mu.Unlock()
		writeJSON(w, http.StatusUnauthorized, authBody)
		return
	}
	s.mu.Lock()
	d := s.deps[depName]
	if d != nil {
		d.stats.Requests++
		d.stats.LastAuth, d.stats.LastPath = authKind, path
		d.stats.LastModel = bodyModel
	}
	s.mu.Unlock()
	if d == nil {
		writeJSON(w, http.StatusNotFound, `{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again."}}`)
		return
	}
	if !modelServes(d.cfg.Model, op.kind) {
		s.count(d, func(st *Stats) { st.BadRequest++ })
		writeJSON(w, http.StatusBadRequest, operationNotSupported(op.kind, d.cfg.Model))
		return
	}
	if op.multipart && jsonErr != nil {
		s.count(d, func(st *Stats) { st.BadRequest++ })
		writeJSON(w, http.StatusBadRequest, errorBody("invalid_request_error", "", "Could not parse multipart form: "+jsonErr.Error(), nil))
		return
	}
	if !op.multipart && (jsonErr != nil || req == nil) {
		s.count(d, func(st *Stats) { st.BadRequest++ })
		writeJSON(w, http.StatusBadRequest, `{"error":{"code":"BadRequest","message":"Could not parse the request body as a JSON object."}}`)
		return
	}
	if op.kind == "chat" {
		if _, ok := req["messages"].([]any); !ok {
			s.count(d, func(st *Stats) { st.BadRequest++ })
			writeJSON(w, http.StatusBadRequest, `{"error":{"message":"'messages' is a required property","type":"invalid_request_error","param":null,"code":null}}`)
			return
		}
	}
	if bad := mediaRequestError(op, req, form); bad != "" {
		s.count(d, func(st *Stats) { st.BadRequest++ })
		writeJSON(w, http.StatusBadRequest, bad)
		return
	}

	faultName := r.Header.Get("x-sim-fault")
	if faultName == "" {
		s.mu.Lock()
		faultName = d.fault
		s.mu.Unlock()
	}
	f, err := parseFault(faultName)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, fmt.Sprintf(`{"error":{"code":"BadRequest","message":%q}}`, err.Error()))
		return
	}
	if f.kind != "" {
		s.count(d, func(st *Stats) { st.Faulted++ })
		if f.immediate(w, r) {
			return
		}
	}

	prompt, text := estimatePrompt(op.kind, req, form)
	requested, hasMax := requestedTokens(op.kind, req)
	if strings.Contains(text, "[[content_filter]]") {
		s.count(d, func(st *Stats) { st.BadRequest++ })
		writeJSON(w, http.StatusBadRequest, contentFilterBody)
		return
	}
	if hasMax && prompt+requested > d.cfg.ContextWindow || prompt > d.cfg.ContextWindow {
		s.count(d, func(st *Stats) { st.BadRequest++ })
		writeJSON(w, http.StatusBadRequest, fmt.Sprintf(`{"error":{"message":"This model's maximum context length is %d tokens. However, you requested %d tokens (%d in the messages, %d in the completion). Please reduce the length of the messages or completion.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}`,
			d.cfg.ContextWindow, prompt+requested, prompt, requested))
		return
	}
	remaining, refusal := s.admit(d, d.cost(prompt, requested, len(body)))
	if refusal != nil {
		s.count(d, func(st *Stats) { st.Throttled++ })
		refusal.write(w, op)
		return
	}
	if remaining.tokens >= 0 {
		h.Set("x-ratelimit-remaining-tokens", fmt.Sprint(remaining.tokens))
	}
	if remaining.requests >= 0 {
		h.Set("x-ratelimit-remaining-requests", fmt.Sprint(remaining.requests))
	}
	switch op.kind {
	case "images", "transcriptions", "translations", "speech":
		s.serveMedia(w, r, d, op, req, form, prompt)
		return
	}

	completion := d.cfg.CompletionTokens
	if hasMax && requested < completion {
		completion = requested
	}
	if op.kind == "embeddings" {
		completion = 0
	}
	a := &answer{
		sim: s, dep: d, op: op, model: d.cfg.Model, prompt: prompt, completion: completion,
		finish: finishReason(hasMax && requested < d.cfg.CompletionTokens), fault: f,
	}
	if in, ok := req["input"].([]any); ok {
		a.inputs = len(in)
	}
	if op.kind == "responses" {
		turn, bad := s.state.beginTurn(req, d.cfg.Model)
		if bad != "" {
			s.count(d, func(st *Stats) { st.BadRequest++ })
			writeJSON(w, http.StatusBadRequest, bad)
			return
		}
		a.turn = turn
		if turn.background {
			s.count(d, func(st *Stats) { st.Served++; st.PromptTokens += prompt; st.CompletionTokens += completion })
			writeJSON(w, http.StatusOK, s.state.startBackground(a, time.Duration(s.cfg.BackgroundTime)+time.Duration(completion)*d.cfg.PerToken.d()))
			return
		}
	}
	if stream, _ := req["stream"].(bool); stream && op.kind != "embeddings" {
		inc := false
		if so, ok := req["stream_options"].(map[string]any); ok {
			inc, _ = so["include_usage"].(bool)
		}
		a.stream(w, r, inc)
		return
	}
	a.plain(w, r)
}

// modelServes reports whether a deployment of model answers an operation, as Azure OpenAI's
// model table has it: embeddings models (text-embedding-*) only embeddings; the completions
// models (gpt-35-turbo-instruct, davinci-002, babbage-002) only completions; image models
// (dall-e-*, gpt-image-*) only images; speech-to-text models (whisper, *-transcribe)
// transcriptions and translations; text-to-speech models (tts*, *-tts) only speech; chat models
// (gpt-*, the o-series) chat completions and responses, not completions nor embeddings. A model
// name the simulator does not know (tests use "m") answers every operation.
func modelServes(model, kind string) bool {
	m := strings.ToLower(model)
	switch {
	case strings.Contains(m, "embedding"):
		return kind == "embeddings"
	case strings.Contains(m, "instruct"), m == "davinci-002", m == "babbage-002":
		return kind == "completions"
	case strings.HasPrefix(m, "dall-e"), strings.Contains(m, "gpt-image"):
		return kind == "images"
	case strings.Contains(m, "whisper"), strings.Contains(m, "transcribe"):
		return kind == "transcriptions" || kind == "translations"
	case strings.HasPrefix(m, "tts"), strings.HasSuffix(m, "-tts"):
		return kind == "speech"
	case strings.HasPrefix(m, "gpt-"), len(m) > 1 && m[0] == 'o' && m[1] >= '0' && m[1] <= '9':
		return kind == "chat" || kind == "responses"
	}
	return true
}

// operationNotSupported is the service's 400 for an operation the deployment's model does not
// serve, e.g. "The embeddings operation does not work with the specified model, gpt-35-turbo."
// (the names of the responses, images and audio operations are assumed by analogy).
func operationNotSupported(kind, model string) string {
	name := map[string]string{"chat": "chatCompletion", "completions": "completion", "embeddings": "embeddings", "responses": "responses",
		"images": "imageGeneration", "transcriptions": "audioTranscription", "translations": "audioTranslation", "speech": "audioSpeech"}[kind]
	msg := fmt.Sprintf("The %s operation does not work with the specified model, %s. Please choose different model and try again. You can learn more about which models can be used with each operation here: https://go.microsoft.com/fwlink/?linkid=2197993.", name, model)
	b, _ := json.Marshal(map[string]any{"error": map[string]any{"code": "OperationNotSupported", "message": msg}})
	return string(b)
}

// errorBody is the OpenAI-style error the v1 API answers with: message, type, param, code.
func errorBody(typ, code, message string, param any) string {
	var c any
	if code != "" {
		c = code
	}
	b, _ := json.Marshal(map[string]any{"error": map[string]any{"message": message, "type": typ, "param": param, "code": c}})
	return string(b)
}

func finishReason(cut bool) string {
	if cut {
		return "length"
	}
	return "stop"
}

const apiKeyDenied = `{"error":{"code":"401","message":"Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}}`
const bearerDenied = `{"error":{"code":"PermissionDenied","message":"Principal does not have access to API/Operation."}}`

// SetAPIKey changes the accepted api-key at run time, as regenerating a key does.
func (s *Simulator) SetAPIKey(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg.APIKey = key
}

// authenticate returns how the caller authenticated, or the 401 body to send.
func (s *Simulator) authenticate(r *http.Request) (kind, denied string) {
	s.mu.Lock()
	want, bearer, audience := s.cfg.APIKey, s.cfg.AcceptBearer, s.cfg.BearerAudience
	s.mu.Unlock()
	if key := r.Header.Get("api-key"); key != "" {
		if want != "" && key != want {
			return "", apiKeyDenied
		}
		return "api-key", ""
	}
	if auth := r.Header.Get("Authorization"); auth != "" {
		token, ok := strings.CutPrefix(auth, "Bearer ")
		if !ok || strings.TrimSpace(token) == "" || !bearer || (audience != "" && tokenAudience(token) != strings.TrimSuffix(audience, "/")) {
			return "", bearerDenied
		}
		return "bearer", ""
	}
	return "", apiKeyDenied
}

// tokenAudience reads a JWT's aud claim without verifying it.
func tokenAudience(token string) string {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var claims struct {
		Aud string `json:"aud"`
	}
	if json.Unmarshal(payload, &claims) != nil {
		return ""
	}
	return strings.TrimSuffix(claims.Aud, "/")
}

// estimatePrompt estimates prompt tokens the way Azure's rate limiter does: characters / 4.
// For a multipart form (image edits, audio) it is the prompt field's.
func estimatePrompt(kind string, req map[string]any, form *multipart.Form) (int, string) {
	if form != nil {
		text := strings.Join(form.Value["prompt"], " ")
		return max(1, (len(text)+3)/4), text
	}
	var b strings.Builder
	var collect func(v any)
	collect = func(v any) {
		switch x := v.(type) {
		case string:
			b.WriteString(x)
		case []any:
			for _, e := range x {
				collect(e)
			}
		case map[string]any:
			for _, k := range []string{"content", "text"} {
				if c, ok := x[k]; ok {
					collect(c)
				}
			}
		}
	}
	switch kind {
	case "chat":
		collect(req["messages"])
	case "completions", "images":
		collect(req["prompt"])
	default:
		collect(req["input"])
	}
	text := b.String()
	return max(1, (len(text)+3)/4), text
}

// requestedTokens is the completion the request may use, for the rate limiter's estimate.
func requestedTokens(kind string, req map[string]any) (int, bool) {
	switch kind {
	case "images", "transcriptions", "translations", "speech":
		return 0, false
	}
	if kind == "embeddings" {
		return 0, false
	}
	for _, k := range []string{"max_tokens", "max_completion_tokens", "max_output_tokens"} {
		if v, ok := req[k].(float64); ok && v >= 0 {
			return int(v), true
		}
	}
	return 256, false
}

type remaining struct{ tokens, requests int }

type refusal struct {
	tokens   bool // the token limit, else the request limit
	wait     time.Duration
	left     remaining
	deadline time.Time
}

// admit applies the request bucket (RPM/6 per fixed 10 s window) and the token limit (rolling
// 60 s window of estimated costs), recording the request if it fits.
func (s *Simulator) admit(d *deployment, cost int) (remaining, *refusal) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	left := remaining{-1, -1}
	if now.Before(d.throttledUntil) {
		return left, &refusal{wait: d.throttledUntil.Sub(now), left: left}
	}
	if d.limiter != nil {
		return d.admitQuota(now, cost)
	}
	if d.cfg.TPM <= 0 && d.cfg.RPM <= 0 {
		return left, nil
	}
	// Forget spends older than the window.
	cut := 0
	for cut < len(d.tokens) && now.Sub(d.tokens[cut].at) >= time.Minute {
		cut++
	}
	d.tokens = d.tokens[cut:]
	used := 0
	for _, sp := range d.tokens {
		used += sp.cost
	}
	bucket := 0
	if d.cfg.RPM > 0 {
		bucket = max(1, d.cfg.RPM/6)
		win := now.Truncate(10 * time.Second)
		if !win.Equal(d.reqWin) {
			d.reqWin, d.reqN = win, 0
		}
		if d.reqN >= bucket {
			return left, &refusal{wait: d.reqWin.Add(10 * time.Second).Sub(now), left: remaining{max(0, d.cfg.TPM-used), 0}}
		}
	}
	if d.cfg.TPM > 0 && used+cost > d.cfg.TPM {
		// Wait until enough of the oldest spends leave the window for this one to fit.
		wait := time.Minute
		freed := 0
		for _, sp := range d.tokens {
			freed += sp.cost
			if used-freed+cost <= d.cfg.TPM {
				wait = sp.at.Add(time.Minute).Sub(now)
				break
			}
		}
		return left, &refusal{tokens: true, wait: wait, left: remaining{max(0, d.cfg.TPM-used), max(0, bucket-d.reqN)}}
	}
	d.tokens = append(d.tokens, spend{now, cost})
	d.reqN++
	if d.cfg.TPM > 0 {
		left.tokens = d.cfg.TPM - used - cost
	}
	if bucket > 0 {
		left.requests = bucket - d.reqN
	}
	return left, nil
}

func (f *refusal) write(w http.ResponseWriter, op operation) {
	secs := int((f.wait + time.Second - 1) / time.Second)
	secs = max(secs, 1)
	h := w.Header()
	h.Set("retry-after", fmt.Sprint(secs))
	h.Set("retry-after-ms", fmt.Sprint(max(f.wait.Milliseconds(), 1)))
	kind := "call rate limit"
	if f.tokens {
		kind = "token rate limit"
		h.Set("x-ratelimit-reset-tokens", fmt.Sprint(secs))
	} else {
		h.Set("x-ratelimit-reset-requests", fmt.Sprint(secs))
	}
	if f.left.tokens >= 0 {
		h.Set("x-ratelimit-remaining-tokens", fmt.Sprint(f.left.tokens))
	}
	if f.left.requests >= 0 {
		h.Set("x-ratelimit-remaining-requests", fmt.Sprint(f.left.requests))
	}
	msg := fmt.Sprintf("Requests to the %s Operation under Azure OpenAI API version %s have exceeded %s of your current OpenAI S0 pricing tier. Please retry after %d seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit.",
		op.name, op.apiVersion, kind, secs)
	b, _ := json.Marshal(map[string]any{"error": map[string]any{"code": "429", "message": msg}})
	writeJSON(w, http.StatusTooManyRequests, string(b))
}

const contentFilterBody = `{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry. To learn more about our content filtering policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation","content_filter_result":{"hate":{"filtered":true,"severity":"high"},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}}}}}`

func writeJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	s := hex.EncodeToString(b[:])
	return s[:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:]
}

// Names lists the deployments, sorted; for the standalone program's banner.
func (s *Simulator) Names() []string {
	var n []string
	for name := range s.deps {
		n = append(n, name)
	}
	sort.Strings(n)
	return n
}
