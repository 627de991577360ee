package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/azure"
	"github.com/openai/openai-go/v3/conversations"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/aoai-failover/gateway/tests/aoaisim"
	"github.com/aoai-failover/gateway/tests/fakeazure"
)

// The Proof of issue 15, for every path an SDK calls: openai-go (azure options, api-key) and
// its plain client on /openai/v1/ (a Bearer client key), the Node SDK's AzureOpenAI and OpenAI
// (tests/node/client.mjs, MODE=api), through the gateway binary with client keys from the
// (fake) Key Vault, against two simulated accounts. First with nothing throttled (every call
// served by the first account), then with every deployment of the first account throttled:
// what is not state-bound fails over to the second; a turn on a response the first account
// holds gets 429 StateOwnerThrottled. For each call: the caller's bytes are the bytes the
// simulator sent, the backend saw the real deployment (in the path, or the body's model,
// rewritten byte-exact), its own key, and never a caller's key.

const apiVersion = "2025-04-01-preview"

// apiTargets: logical deployment -> account -> real deployment.
var apiTargets = map[string]map[string]string{
	"chat":       {"swc": "micro", "frc": "big"},
	"image":      {"swc": "img-swc", "frc": "img-frc"},
	"transcribe": {"swc": "stt-swc", "frc": "stt-frc"},
	"speech":     {"swc": "tts-swc", "frc": "tts-frc"},
}

var apiModels = map[string]string{"chat": "gpt-4o-mini", "image": "gpt-image-1", "transcribe": "whisper", "speech": "gpt-4o-mini-tts"}

// apiSetup is two accounts behind the gateway, client keys in the fake Key Vault.
type apiSetup struct {
	swc, frc        *region
	regions         map[string]*region
	env             map[string]string
	secrets         []string
	keyAzure, keyV1 string // client keys: as api-key (azure clients), as a Bearer token (v1 clients)
	identity        *fakeazure.Identity
	keyVault        *fakeazure.KeyVault
	replays         int // failed attempts whose body was compared with the caller's
}

func startAPIRegion(t testing.TB, name string, gzip bool) *region {
	t.Helper()
	key := "sim-key-" + name + "-api-7c41e0"
	deps := map[string]aoaisim.Deployment{}
	for logical, per := range apiTargets {
		deps[per[name]] = aoaisim.Deployment{Model: apiModels[logical], CompletionTokens: 8}
	}
	sim, srv, err := aoaisim.Start(aoaisim.Config{APIKey: key, Region: name, Gzip: gzip, Deployments: deps, BackgroundTime: aoaisim.Duration(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return &region{Sim: sim, Srv: srv, Key: key}
}

// newAPISetup: swc answers plainly, frc gzips its JSON answers (so the gateway learns owners
// from compressed answers too); every logical deployment has swc first, frc second.
func newAPISetup(t testing.TB) *apiSetup {
	ca := fakeazure.NewCA(t)
	s := &apiSetup{keyVault: fakeazure.NewKeyVault(t, ca), identity: fakeazure.NewIdentity(t),
		keyAzure: "client-key-azure-4d1e9b7c", keyV1: "client-key-v1-8a2f3c60"}
	s.swc, s.frc = startAPIRegion(t, "swc", false), startAPIRegion(t, "frc", true)
	s.regions = map[string]*region{"swc": s.swc, "frc": s.frc}
	s.keyVault.SetSecret("gateway-client-keys", fmt.Sprintf(`{"sdk-azure":%q,"sdk-v1":%q}`, s.keyAzure, s.keyV1))
	doc := newRouting().account("swc", s.swc).account("frc", s.frc)
	for logical, per := range apiTargets {
		doc.target(logical, "swc", per["swc"], 1).target(logical, "frc", per["frc"], 2)
	}
	doc.Clients = map[string]any{"keyVaultSecret": "gateway-client-keys"}
	s.env = doc.env(s.regions)
	var m map[string]any
	json.Unmarshal([]byte(s.env["GATEWAY_CONFIG"]), &m)
	m["keyVault"], m["defaultDeployment"] = s.keyVault.URL, "chat"
	b, _ := json.Marshal(m)
	s.env["GATEWAY_CONFIG"] = string(b)
	s.env["SSL_CERT_FILE"] = ca.File
	for k, v := range s.identity.Env() {
		s.env[k] = v
	}
	s.secrets = append(doc.secrets(s.regions), s.keyAzure, s.keyV1, s.identity.Header)
	return s
}

func (s *apiSetup) start(t testing.TB, extra map[string]string) *gatewayProc {
	env := map[string]string{}
	for k, v := range s.env {
		env[k] = v
	}
	for k, v := range extra {
		env[k] = v
	}
	gw := startGateway(t, env, s.secrets...)
	waitFor(t, "the client keys read from Key Vault", 10*time.Second, func() bool {
		resp, err := http.Get(gw.URL + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return gw
}

// throttleFirst makes every deployment of swc answer 429 for d.
func (s *apiSetup) throttleFirst(d time.Duration) {
	for _, per := range apiTargets {
		s.swc.Sim.Throttle(per["swc"], d)
	}
}

// exchange is one HTTP exchange an SDK made, as the SDK saw it. Its X-Test-Call header, which
// the gateway passes on like any header that is not a credential, finds what the backends got.
type exchange struct {
	callID   string
	method   string
	url      string
	reqBody  []byte
	status   int
	header   http.Header
	body     *bytes.Buffer // what the SDK read of the answer
	bodyHash string        // the Node SDK's: sha256 of the answer it got
}

// sdkRecorder is an openai-go middleware keeping the request body and a copy of what the SDK
// reads of the answer.
type sdkRecorder struct {
	name string
	mu   sync.Mutex
	all  []*exchange
}

type teeBody struct {
	io.ReadCloser
	w io.Writer
}

func (b teeBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.w.Write(p[:n])
	return n, err
}

func (r *sdkRecorder) middleware(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
	r.mu.Lock()
	ex := &exchange{callID: fmt.Sprintf("%s-%d", r.name, len(r.all)+1), method: req.Method, url: req.URL.String(), body: &bytes.Buffer{}}
	r.all = append(r.all, ex)
	r.mu.Unlock()
	req.Header.Set("X-Test-Call", ex.callID)
	if req.Body != nil {
		ex.reqBody, _ = io.ReadAll(req.Body)
		req.Body.Close()
		req.Body = io.NopCloser(bytes.NewReader(ex.reqBody))
	}
	resp, err := next(req)
	if resp != nil {
		ex.status, ex.header = resp.StatusCode, resp.Header
		resp.Body = teeBody{resp.Body, ex.body}
	}
	return resp, err
}

// last is the SDK's last exchange.
func (r *sdkRecorder) last() *exchange {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.all[len(r.all)-1]
}

// expect is what a call must have done.
type expect struct {
	status   int
	servedBy string // "swc/micro" (a target), "frc" (an account: calls on stored resources), "none" (the gateway answered)
	logical  string // the logical name the caller sent in the body's model (v1, responses) or form field
	v1       bool   // routed by the body's model: rewritten in the body
	unread   bool   // the SDK does not read the answer's body (openai-go's Responses.Delete)
	direct   bool   // nothing is throttled: one attempt, on the first target
}

// check verifies one exchange against the simulators' records and returns the record of the
// backend's answer.
func (s *apiSetup) check(t *testing.T, what string, ex *exchange, want expect) aoaisim.Record {
	t.Helper()
	if ex.status != want.status {
		t.Errorf("%s: status %d, want %d; answer %.400s", what, ex.status, want.status, ex.body)
	}
	servedBy := ex.header.Get("x-served-by")
	if attempts := ex.header.Get("x-gateway-attempts"); want.direct && want.servedBy != "none" && attempts != "1" {
		t.Errorf("%s: x-gateway-attempts %q with nothing throttled, want 1", what, attempts)
	}
	if servedBy != want.servedBy {
		t.Errorf("%s: x-served-by %q, want %q (x-gateway-attempts %s); answer %.400s", what, servedBy, want.servedBy, ex.header.Get("x-gateway-attempts"), ex.body)
	}
	// Every request a backend got for the call: its own key, never a caller's. (The gateway's
	// own look-ups carry no X-Test-Call; TestSDKAPI checks every record's key at the end.)
	var during []aoaisim.Record
	for name, r := range s.regions {
		for _, rec := range r.Sim.Records() {
			if rec.RequestHeader.Get("X-Test-Call") != ex.callID {
				continue
			}
			during = append(during, rec)
			if rec.APIKey != r.Key || rec.Authorization != "" {
				t.Errorf("%s: %s %s on %s arrived with api-key %q and Authorization %q, want only its own key", what, rec.Method, rec.Path, name, rec.APIKey, rec.Authorization)
			}
			for _, k := range []string{s.keyAzure, s.keyV1} {
				if strings.Contains(rec.APIKey+rec.Authorization, k) || bytes.Contains(rec.Body, []byte(k)) {
					t.Errorf("%s: the caller's key reached %s", what, name)
				}
			}
		}
	}
	if servedBy == "none" || servedBy == "" {
		for _, rec := range during {
			if rec.Status/100 == 2 && rec.Method != http.MethodGet {
				t.Errorf("%s: the gateway answered itself, but %s %s was served by a backend", what, rec.Method, rec.Path)
			}
		}
		return aoaisim.Record{}
	}
	account, deployment, _ := strings.Cut(servedBy, "/")
	r := s.regions[account]
	if r == nil {
		t.Errorf("%s: served by an unknown account %q", what, servedBy)
		return aoaisim.Record{}
	}
	rec, ok := r.Sim.RecordOf(ex.header.Get("apim-request-id"), 5*time.Second)
	if !ok {
		t.Errorf("%s: %s has no finished record of apim-request-id %q", what, account, ex.header.Get("apim-request-id"))
		return rec
	}
	// The caller's answer is the backend's, byte for byte.
	if ex.bodyHash != "" {
		if sum := sha256.Sum256(rec.Response); hex.EncodeToString(sum[:]) != ex.bodyHash {
			t.Errorf("%s: the Node SDK got other bytes than %s sent (%d bytes): %.300s", what, account, len(rec.Response), rec.Response)
		}
	} else if !want.unread && !bytes.Equal(ex.body.Bytes(), rec.Response) {
		t.Errorf("%s: the caller got other bytes than %s sent:\n caller  %.300q\n backend %.300q", what, account, ex.body.Bytes(), rec.Response)
	}
	if rec.Status != ex.status {
		t.Errorf("%s: backend status %d, caller's %d", what, rec.Status, ex.status)
	}
	// The deployment the backend saw is the target's, in the path or in the body.
	if rec.Deployment != deployment {
		t.Errorf("%s: %s saw deployment %q at %s, want %q", what, account, rec.Deployment, rec.Path, deployment)
	}
	if want.v1 && rec.Model != deployment {
		t.Errorf("%s: %s saw model %q, want the rewritten %q", what, account, rec.Model, deployment)
	}
	if ex.reqBody != nil {
		wantBody := ex.reqBody
		if want.v1 {
			wantBody = rewriteModel(ex.reqBody, want.logical, deployment)
		}
		if !bytes.Equal(rec.Body, wantBody) {
			t.Errorf("%s: %s got another body than the caller's (with the model rewritten): %d bytes, want %d: %.300q", what, account, len(rec.Body), len(wantBody), rec.Body)
		}
	}
	// Other requests during the call: failed attempts (429) and owner look-ups (GET).
	for _, o := range during {
		if o.ID == rec.ID {
			continue
		}
		switch {
		case o.Status == http.StatusTooManyRequests:
			// A failed attempt got the caller's body too, with its own deployment's name.
			if ex.reqBody != nil {
				wantBody := ex.reqBody
				if want.v1 {
					wantBody = rewriteModel(ex.reqBody, want.logical, o.Deployment)
				}
				if !bytes.Equal(o.Body, wantBody) {
					t.Errorf("%s: the failed attempt on %s carried another body than the caller's", what, o.Deployment)
				}
				s.replays++
			}
		default:
			t.Errorf("%s: unexpected request %s %s (%d) during the call", what, o.Method, o.Path, o.Status)
		}
	}
	return rec
}

// rewriteModel is body with the logical name in its model (a JSON string or a form field)
// replaced by deployment, as the gateway rewrites it.
func rewriteModel(body []byte, logical, deployment string) []byte {
	if logical == "" {
		return body
	}
	if i := bytes.Index(body, []byte(`"model":"`+logical+`"`)); i >= 0 {
		return bytes.Join([][]byte{body[:i], []byte(`"model":"` + deployment + `"`), body[i+len(`"model":"`+logical+`"`):]}, nil)
	}
	field := []byte("name=\"model\"\r\n\r\n" + logical + "\r\n")
	if i := bytes.Index(body, field); i >= 0 {
		return bytes.Join([][]byte{body[:i], []byte("name=\"model\"\r\n\r\n" + deployment + "\r\n"), body[i+len(field):]}, nil)
	}
	field = []byte("name=\"model\"\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + logical + "\r\n")
	if i := bytes.Index(body, field); i >= 0 {
		return bytes.Join([][]byte{body[:i], bytes.Replace(field, []byte(logical+"\r\n"), []byte(deployment+"\r\n"), 1), body[i+len(field):]}, nil)
	}
	return body
}

// testAudio is the 2 MiB "recording" every transcription uploads; the Node client makes the
// same bytes.
func testAudio() []byte {
	b := make([]byte, 2<<20)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

// phaseIDs are what one client flavour created in a phase.
type phaseIDs struct {
	response, file, conversation string
}

// runGo drives one openai-go client through every call. throttled: swc refuses everything, so
// what is created lands on frc; old names a response made before on swc.
func (s *apiSetup) runGo(t *testing.T, c openai.Client, rec *sdkRecorder, flavour string, throttled bool, old *phaseIDs) *phaseIDs {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	acc := "swc"
	if throttled {
		acc = "frc"
	}
	target := func(logical string) string { return acc + "/" + apiTargets[logical][acc] }
	v1 := flavour == "v1"
	ids := &phaseIDs{}
	call := func(what string, err error, want expect) aoaisim.Record {
		t.Helper()
		want.direct = !throttled
		if err != nil && want.status/100 == 2 {
			t.Errorf("%s %s: %v", flavour, what, err)
		}
		return s.check(t, flavour+" "+what, rec.last(), want)
	}

	// Chat: the deployments route (azure) or the body's model (v1).
	cc, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "chat", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello, gateway.")}})
	call("chat", err, expect{status: 200, servedBy: target("chat"), logical: "chat", v1: v1})
	if err == nil && (len(cc.Choices) != 1 || cc.Choices[0].Message.Content == "") {
		t.Errorf("%s chat: %+v", flavour, cc)
	}

	// Responses, plain and streamed, then a turn on the first.
	input := func(s string) responses.ResponseNewParamsInputUnion {
		return responses.ResponseNewParamsInputUnion{OfString: openai.String(s)}
	}
	r1, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "chat", Input: input("First turn.")})
	call("responses create", err, expect{status: 200, servedBy: target("chat"), logical: "chat", v1: true})
	if err != nil {
		t.Fatalf("%s: cannot go on without a response", flavour)
	}
	stream := c.Responses.NewStreaming(ctx, responses.ResponseNewParams{Model: "chat", Input: input("Stream it.")})
	var streamID string
	events := 0
	for stream.Next() {
		events++
		if ev := stream.Current(); ev.Type == "response.completed" {
			streamID = ev.Response.ID
		}
	}
	call("responses stream", stream.Err(), expect{status: 200, servedBy: target("chat"), logical: "chat", v1: true})
	if stream.Err() != nil || events < 3 || !strings.HasPrefix(streamID, "resp_") {
		t.Errorf("%s stream: %v, %d events, id %q", flavour, stream.Err(), events, streamID)
	}
	r2, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "chat", Input: input("Second turn."), PreviousResponseID: openai.String(r1.ID)})
	call("responses turn (previous_response_id)", err, expect{status: 200, servedBy: target("chat"), logical: "chat", v1: true})
	if err == nil && r2.PreviousResponseID != r1.ID {
		t.Errorf("%s turn: previous_response_id %q", flavour, r2.PreviousResponseID)
	}
	s2, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "chat", Input: input("After the stream."), PreviousResponseID: openai.String(streamID)})
	call("responses turn on a streamed response", err, expect{status: 200, servedBy: target("chat"), logical: "chat", v1: true})
	if err == nil && s2.PreviousResponseID != streamID {
		t.Errorf("%s turn on the stream: %+v", flavour, s2)
	}
	got, err := c.Responses.Get(ctx, r1.ID, responses.ResponseGetParams{})
	call("responses get", err, expect{status: 200, servedBy: acc})
	if err == nil && got.ID != r1.ID {
		t.Errorf("%s get: %+v", flavour, got)
	}
	items, err := c.Responses.InputItems.List(ctx, r2.ID, responses.InputItemListParams{})
	call("responses input_items", err, expect{status: 200, servedBy: acc})
	if err == nil && (len(items.Data) != 1 || !strings.Contains(items.Data[0].RawJSON(), "Second turn.")) {
		t.Errorf("%s input items: %s", flavour, items.RawJSON())
	}
	bg, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "chat", Input: input("Take your time."), Background: openai.Bool(true)})
	call("responses create (background)", err, expect{status: 200, servedBy: target("chat"), logical: "chat", v1: true})
	if err == nil {
		cancelled, err := c.Responses.Cancel(ctx, bg.ID)
		call("responses cancel", err, expect{status: 200, servedBy: acc})
		if err == nil && cancelled.Status != "cancelled" {
			t.Errorf("%s cancel: %+v", flavour, cancelled)
		}
	}
	err = c.Responses.Delete(ctx, r2.ID)
	call("responses delete", err, expect{status: 200, servedBy: acc, unread: true})
	_, err = c.Responses.Get(ctx, r2.ID, responses.ResponseGetParams{})
	call("responses get after delete (the owner's 404)", err, expect{status: 404, servedBy: acc})
	ids.response = r1.ID

	// Conversations: created on the first available account, a turn in it goes there.
	conv, err := c.Conversations.New(ctx, conversations.ConversationNewParams{Items: []responses.ResponseInputItemUnionParam{
		responses.ResponseInputItemParamOfMessage("Remember the number 42.", responses.EasyInputMessageRoleUser)}})
	call("conversations create", err, expect{status: 200, servedBy: acc})
	if err != nil {
		t.Fatalf("%s: no conversation", flavour)
	}
	_, err = c.Conversations.Items.New(ctx, conv.ID, conversations.ItemNewParams{Items: []responses.ResponseInputItemUnionParam{
		responses.ResponseInputItemParamOfMessage("And 7.", responses.EasyInputMessageRoleUser)}})
	call("conversations items create", err, expect{status: 200, servedBy: acc})
	rc, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "chat", Input: input("Which numbers?"),
		Conversation: responses.ResponseNewParamsConversationUnion{OfString: openai.String(conv.ID)}})
	call("responses turn in a conversation", err, expect{status: 200, servedBy: target("chat"), logical: "chat", v1: true})
	if err == nil && rc.Conversation.ID != conv.ID {
		t.Errorf("%s conversation turn: %+v", flavour, rc.Conversation)
	}
	citems, err := c.Conversations.Items.List(ctx, conv.ID, conversations.ItemListParams{})
	call("conversations items list", err, expect{status: 200, servedBy: acc})
	if err == nil && len(citems.Data) != 4 {
		t.Errorf("%s conversation items: %s", flavour, citems.RawJSON())
	}
	_, err = c.Conversations.Get(ctx, conv.ID)
	call("conversations get", err, expect{status: 200, servedBy: acc})

	// Files, a batch on one, a vector store.
	jsonl := []byte(`{"custom_id":"1","method":"POST","url":"/v1/chat/completions","body":{"model":"` + apiTargets["chat"][acc] + `","messages":[{"role":"user","content":"hi"}]}}` + "\n")
	f, err := c.Files.New(ctx, openai.FileNewParams{File: openai.File(bytes.NewReader(jsonl), "requests.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch})
	call("files upload", err, expect{status: 200, servedBy: acc})
	if err != nil {
		t.Fatalf("%s: no file", flavour)
	}
	ids.file = f.ID
	ids.conversation = conv.ID
	gotFile, err := c.Files.Get(ctx, f.ID)
	call("files get", err, expect{status: 200, servedBy: acc})
	if err == nil && gotFile.Bytes != int64(len(jsonl)) {
		t.Errorf("%s file: %+v", flavour, gotFile)
	}
	content, err := c.Files.Content(ctx, f.ID)
	if err == nil {
		b, _ := io.ReadAll(content.Body)
		content.Body.Close()
		if !bytes.Equal(b, jsonl) {
			t.Errorf("%s file content %q", flavour, b)
		}
	}
	call("files content", err, expect{status: 200, servedBy: acc})
	list, err := c.Files.List(ctx, openai.FileListParams{})
	call("files list", err, expect{status: 200, servedBy: acc})
	if err == nil && (len(list.Data) == 0 || list.Data[0].ID != f.ID) {
		t.Errorf("%s files list: %s", flavour, list.RawJSON())
	}
	batch, err := c.Batches.New(ctx, openai.BatchNewParams{InputFileID: f.ID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions, CompletionWindow: openai.BatchNewParamsCompletionWindow24h})
	call("batches create (on the file's account)", err, expect{status: 200, servedBy: acc})
	if err == nil {
		_, err = c.Batches.Get(ctx, batch.ID)
		call("batches get", err, expect{status: 200, servedBy: acc})
		b, err := c.Batches.Cancel(ctx, batch.ID)
		call("batches cancel", err, expect{status: 200, servedBy: acc})
		if err == nil && b.Status != "cancelling" {
			t.Errorf("%s batch cancel: %+v", flavour, b)
		}
	}
	vs, err := c.VectorStores.New(ctx, openai.VectorStoreNewParams{Name: openai.String("docs")})
	call("vector stores create", err, expect{status: 200, servedBy: acc})
	if err == nil {
		_, err = c.VectorStores.Get(ctx, vs.ID)
		call("vector stores get", err, expect{status: 200, servedBy: acc})
		del, err := c.VectorStores.Delete(ctx, vs.ID)
		call("vector stores delete", err, expect{status: 200, servedBy: acc})
		if err == nil && !del.Deleted {
			t.Errorf("%s vector store delete: %+v", flavour, del)
		}
	}

	// Images and audio: the deployments route (azure) or the model field (v1).
	img, err := c.Images.Generate(ctx, openai.ImageGenerateParams{Model: "image", Prompt: "A lighthouse in two regions."})
	call("images generate", err, expect{status: 200, servedBy: target("image"), logical: "image", v1: v1})
	if err == nil && (len(img.Data) != 1 || img.Data[0].B64JSON == "") {
		t.Errorf("%s image: %s", flavour, img.RawJSON())
	}
	_, err = c.Images.Edit(ctx, openai.ImageEditParams{Model: "image", Prompt: "Add a second lighthouse.",
		Image: openai.ImageEditParamsImageUnion{OfFile: openai.File(bytes.NewReader([]byte("\x89PNG\r\n\x1a\n-test-image")), "in.png", "image/png")}})
	call("images edit (multipart)", err, expect{status: 200, servedBy: target("image"), logical: "image", v1: v1})
	audio := testAudio()
	sum := sha256.Sum256(audio)
	tr, err := c.Audio.Transcriptions.New(ctx, openai.AudioTranscriptionNewParams{Model: "transcribe", File: openai.File(bytes.NewReader(audio), "talk.wav", "audio/wav")})
	trRec := call("audio transcription (2 MiB multipart)", err, expect{status: 200, servedBy: target("transcribe"), logical: "transcribe", v1: v1})
	if err == nil && !strings.Contains(tr.Text, fmt.Sprintf("(%d bytes, sha256 %s)", len(audio), hex.EncodeToString(sum[:8]))) {
		t.Errorf("%s transcription: %q", flavour, tr.Text)
	}
	if !bytes.Contains(trRec.Body, audio) {
		t.Errorf("%s transcription: the backend did not get the 2 MiB file intact", flavour)
	}
	sp, err := c.Audio.Speech.New(ctx, openai.AudioSpeechNewParams{Model: "speech", Input: "Two regions, one gateway.", Voice: openai.AudioSpeechNewParamsVoiceUnion{OfString: openai.String("alloy")}})
	if err == nil {
		io.ReadAll(sp.Body)
		sp.Body.Close()
	}
	call("audio speech", err, expect{status: 200, servedBy: target("speech"), logical: "speech", v1: v1})

	// The models list is the gateway's own.
	models, err := c.Models.List(ctx)
	call("models list", err, expect{status: 200, servedBy: "none"})
	var names []string
	if err == nil {
		for _, m := range models.Data {
			names = append(names, m.ID)
		}
	}
	if strings.Join(names, ",") != "chat,image,speech,transcribe" {
		t.Errorf("%s models: %v %v", flavour, err, names)
	}

	// With swc throttled, a turn on a response it holds cannot move: 429 StateOwnerThrottled.
	if throttled && old != nil {
		_, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "chat", Input: input("Still there?"), PreviousResponseID: openai.String(old.response)})
		ex := rec.last()
		var e *openai.Error
		if !errors.As(err, &e) || e.StatusCode != 429 || e.Code != "StateOwnerThrottled" || !strings.Contains(e.Message, old.response) ||
			ex.header.Get("retry-after") == "" || ex.header.Get("retry-after-ms") == "" {
			t.Errorf("%s turn on swc's response while swc is throttled: %v, retry-after %q", flavour, err, ex.header.Get("retry-after"))
		}
		s.check(t, flavour+" turn on the throttled owner's response", ex, expect{status: 429, servedBy: "none"})
		// Calls on it by id still reach it: the throttle is the deployment's, not the account's.
		_, err = c.Responses.Get(ctx, old.response, responses.ResponseGetParams{})
		call("responses get on the throttled account", err, expect{status: 200, servedBy: "swc"})
		_, err = c.Files.Get(ctx, old.file)
		call("files get on the throttled account", err, expect{status: 200, servedBy: "swc"})
		// Deletes, on both accounts: the file made now (frc) and the one made before (swc),
		// then the conversations.
		for _, d := range []struct{ file, conv, acc, where string }{{f.ID, conv.ID, "frc", ""}, {old.file, old.conversation, "swc", " on the throttled account"}} {
			del, err := c.Files.Delete(ctx, d.file)
			call("files delete"+d.where, err, expect{status: 200, servedBy: d.acc})
			if err == nil && (!del.Deleted || del.ID != d.file) {
				t.Errorf("%s files delete: %+v", flavour, del)
			}
			_, err = c.Files.Get(ctx, d.file)
			call("files get after delete"+d.where+" (the owner's 404)", err, expect{status: 404, servedBy: d.acc})
			cdel, err := c.Conversations.Delete(ctx, d.conv)
			call("conversations delete"+d.where, err, expect{status: 200, servedBy: d.acc})
			if err == nil && !cdel.Deleted {
				t.Errorf("%s conversations delete: %+v", flavour, cdel)
			}
		}
	}
	return ids
}

// nodeCall is one call the Node SDK made, as client.mjs reports it.
type nodeCall struct {
	Flavour    string `json:"flavour"`
	Op         string `json:"op"`
	Method     string `json:"method"`
	URL        string `json:"url"`
	Status     int    `json:"status"`
	ServedBy   string `json:"servedBy"`
	Attempts   string `json:"attempts"`
	RequestID  string `json:"requestId"`
	RetryAfter string `json:"retryAfter"`
	SHA256     string `json:"sha256"`
	CallID     string `json:"callId"`
	Error      string `json:"error"`
	Code       string `json:"code"`
	Check      string `json:"check"` // what the script found wrong in the parsed answer, if anything
}

func nodeAvailable(t *testing.T) (string, string) {
	dir := filepath.Join(repoRoot(), "tests", "node")
	node, err := exec.LookPath("node")
	if _, statErr := os.Stat(filepath.Join(dir, "node_modules", "openai")); err != nil || statErr != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("node or the OpenAI Node SDK is missing (tests/run installs them): %v %v", err, statErr)
		}
		return "", ""
	}
	return node, dir
}

// runNode drives AzureOpenAI and OpenAI (v1) through client.mjs's MODE=api and checks every
// call it made.
func (s *apiSetup) runNode(t *testing.T, gw *gatewayProc, throttled bool, old *phaseIDs) *phaseIDs {
	node, dir := nodeAvailable(t)
	if node == "" {
		t.Skip("needs node and `npm ci` in tests/node (tests/run does both)")
	}
	phase := "direct"
	if throttled {
		phase = "throttled"
	}
	cmd := exec.Command(node, "client.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "MODE=api", "PHASE="+phase, "GATEWAY_URL="+gw.URL, "API_VERSION="+apiVersion,
		"AZURE_KEY="+s.keyAzure, "V1_KEY="+s.keyV1)
	oldResponse := ""
	if old != nil {
		oldResponse = old.response
		cmd.Env = append(cmd.Env, "OLD_RESPONSE_ID="+old.response, "OLD_FILE_ID="+old.file, "OLD_CONVERSATION_ID="+old.conversation)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node client: %v\n%s\n%s", err, out, stderr.String())
	}
	var got struct {
		Calls    []nodeCall `json:"calls"`
		Response string     `json:"response"`
		File     string     `json:"file"`
		Conv     string     `json:"conversation"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("client output %q: %v", out, err)
	}
	acc := "swc"
	if throttled {
		acc = "frc"
	}
	seen := map[string]int{}
	for _, c := range got.Calls {
		what := "node " + c.Flavour + " " + c.Op
		seen[c.Flavour]++
		if c.Check != "" {
			t.Errorf("%s: %s", what, c.Check)
		}
		want := expect{status: 200, servedBy: acc, direct: !throttled}
		if logical, ok := nodeInference[c.Op]; ok {
			want.servedBy, want.logical = acc+"/"+apiTargets[logical][acc], logical
			want.v1 = c.Flavour == "v1" || strings.HasPrefix(c.Op, "responses create")
		}
		switch c.Op {
		case "models list":
			want.servedBy = "none"
		case "responses get after delete":
			want.status = 404
		case "responses turn on the throttled owner's response":
			want = expect{status: 429, servedBy: "none"}
			if c.Code != "StateOwnerThrottled" || c.RetryAfter == "" || !strings.Contains(c.Error, oldResponse) {
				t.Errorf("%s: %d %s %q retry-after %q", what, c.Status, c.Code, c.Error, c.RetryAfter)
			}
		case "responses get on the throttled account", "files get on the throttled account", "files delete on the throttled account",
			"conversations delete on the throttled account":
			want.servedBy = "swc"
		case "files get after delete":
			want.status = 404
		case "files get after delete on the throttled account":
			want.status, want.servedBy = 404, "swc"
		}
		if c.Error != "" && want.status/100 == 2 {
			t.Errorf("%s: %s", what, c.Error)
		}
		ex := &exchange{callID: c.CallID, method: c.Method, url: c.URL, status: c.Status,
			header: http.Header{"X-Served-By": {c.ServedBy}, "X-Gateway-Attempts": {c.Attempts}, "Apim-Request-Id": {c.RequestID}}, bodyHash: c.SHA256, body: &bytes.Buffer{}}
		if want.servedBy == "none" {
			ex.bodyHash = ""
		}
		rec := s.check(t, what, ex, want)
		if c.Op == "audio transcription" && !bytes.Contains(rec.Body, testAudio()) {
			t.Errorf("%s: the backend did not get the 2 MiB file intact", what)
		}
	}
	if seen["azure"] < 25 || seen["v1"] < 25 {
		t.Errorf("the Node client made %v calls per flavour, want every operation", seen)
	}
	return &phaseIDs{response: got.Response, file: got.File, conversation: got.Conv}
}

// nodeInference: the Node client's inference operations and their logical deployments.
var nodeInference = map[string]string{
	"chat": "chat", "responses create": "chat", "responses stream": "chat", "responses create (turn)": "chat",
	"responses create (turn on the stream)": "chat", "responses create (background)": "chat", "responses create (in the conversation)": "chat",
	"images generate": "image", "images edit": "image", "audio transcription": "transcribe", "audio speech": "speech",
}

// TestSDKAPI: every path, every SDK flavour, direct and with the first account throttled.
func TestSDKAPI(t *testing.T) {
	s := newAPISetup(t)
	gw := s.start(t, nil)
	azureRec, v1Rec := &sdkRecorder{name: "go-azure"}, &sdkRecorder{name: "go-v1"}
	clients := map[string]openai.Client{
		"azure": openai.NewClient(azure.WithEndpoint(gw.URL, apiVersion), azure.WithAPIKey(s.keyAzure), azure.WithUnsafeAllowHTTP(),
			option.WithMaxRetries(0), option.WithMiddleware(azureRec.middleware)),
		"v1": openai.NewClient(option.WithBaseURL(gw.URL+"/openai/v1/"), option.WithAPIKey(s.keyV1), option.WithMaxRetries(0),
			option.WithMiddleware(v1Rec.middleware)),
	}
	recs := map[string]*sdkRecorder{"azure": azureRec, "v1": v1Rec}
	old := map[string]*phaseIDs{}
	var nodeOld *phaseIDs
	for _, throttled := range []bool{false, true} {
		phase := "direct"
		if throttled {
			phase = "throttled"
			s.throttleFirst(5 * time.Minute)
		}
		for _, flavour := range []string{"azure", "v1"} {
			t.Run(phase+"/go-"+flavour, func(t *testing.T) {
				ids := s.runGo(t, clients[flavour], recs[flavour], flavour, throttled, old[flavour])
				if !throttled {
					old[flavour] = ids
				}
			})
		}
		t.Run(phase+"/node", func(t *testing.T) {
			if r := s.runNode(t, gw, throttled, nodeOld); !throttled {
				nodeOld = r
			}
		})
	}
	// Nothing was served by swc while it was throttled, and no backend ever saw a caller's key
	// (check looked at every request during every call; this looks at all of them).
	// One instance learns every owner from the answer that created it (plain, streamed, or
	// gzipped by frc): it never needs to look one up on the accounts.
	lookups, compressed := 0, 0
	for name, r := range s.regions {
		for _, rec := range r.Sim.Records() {
			if rec.APIKey != r.Key || rec.Authorization != "" {
				t.Errorf("%s got %s %s with another credential", name, rec.Method, rec.Path)
			}
			if rec.RequestHeader.Get("X-Test-Call") == "" {
				lookups++
				t.Errorf("%s got %s %s from the gateway itself: an owner it should have learned from the creating answer", name, rec.Method, rec.Path)
			}
			if rec.Compressed {
				compressed++
			}
		}
	}
	if compressed == 0 {
		t.Errorf("frc never compressed an answer: the gateway did not pass Accept-Encoding on")
	}
	t.Logf("answers frc gzipped: %d; owner look-ups: %d", compressed, lookups)
	for logical, per := range apiTargets {
		if st := s.swc.Sim.Stats()[per["swc"]]; st.Throttled == 0 {
			t.Errorf("swc/%s (%s) never answered 429: the throttled phase did not fail over from it: %+v", per["swc"], logical, st)
		}
	}
	if s.replays == 0 {
		t.Errorf("no failed attempt's body was compared with the caller's")
	}
	t.Logf("failed attempts whose replayed body matched the caller's: %d", s.replays)
}

// TestSDKAPIStateNamedInBody: state can also be named inside a request body, not only by
// previous_response_id, conversation or a batch's input_file_id: a vector store made from
// files (file_ids), a Responses turn whose file_search tool searches vector stores
// (vector_store_ids), a turn whose input attaches a file (input_file's file_id). Each lives in
// one account, so such a request must go to that account, as a batch goes to its file's; while
// that account is throttled the caller must get 429 StateOwnerThrottled, never a 400 "not found"
// from another account.
func TestSDKAPIStateNamedInBody(t *testing.T) {
	s := newAPISetup(t)
	gw := s.start(t, nil)
	rec := &sdkRecorder{name: "body"}
	c := openai.NewClient(option.WithBaseURL(gw.URL+"/openai/v1/"), option.WithAPIKey(s.keyV1), option.WithMaxRetries(0), option.WithMiddleware(rec.middleware))
	ctx := context.Background()
	f, err := c.Files.New(ctx, openai.FileNewParams{File: openai.File(strings.NewReader("The gateway has two regions."), "notes.txt", "text/plain"), Purpose: openai.FilePurposeUserData})
	if err != nil {
		t.Fatal(err)
	}
	s.check(t, "files upload", rec.last(), expect{status: 200, servedBy: "swc", direct: true})
	vs, err := c.VectorStores.New(ctx, openai.VectorStoreNewParams{Name: openai.String("notes"), FileIDs: []string{f.ID}})
	if err != nil {
		t.Fatal(err)
	}
	s.check(t, "vector stores create from a file", rec.last(), expect{status: 200, servedBy: "swc", direct: true})
	s.throttleFirst(time.Minute)
	_, err = c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "chat", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}})
	s.check(t, "chat (the gateway learns that swc is throttled)", rec.last(), expect{status: 200, servedBy: "frc/" + apiTargets["chat"]["frc"], logical: "chat", v1: true})

	for _, tc := range []struct {
		what string
		call func() error
		want string // the outcomes that are right
	}{
		{"a vector store made from swc's file", func() error {
			_, err := c.VectorStores.New(ctx, openai.VectorStoreNewParams{Name: openai.String("again"), FileIDs: []string{f.ID}})
			return err
		}, "200 from swc (the file's account; calls on stored resources are not throttled), or 429/503 naming the file"},
		{"a turn whose file_search searches swc's vector store", func() error {
			_, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "chat", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("What do the notes say?")},
				Tools: []responses.ToolUnionParam{{OfFileSearch: &responses.FileSearchToolParam{VectorStoreIDs: []string{vs.ID}}}}})
			return err
		}, "429 StateOwnerThrottled naming the vector store"},
		{"a turn attaching swc's file", func() error {
			_, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "chat", Input: responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{
				responses.ResponseInputItemParamOfMessage(responses.ResponseInputMessageContentListParam{
					{OfInputFile: &responses.ResponseInputFileParam{FileID: openai.String(f.ID)}},
					{OfInputText: &responses.ResponseInputTextParam{Text: "Summarise it."}},
				}, responses.EasyInputMessageRoleUser)}}})
			return err
		}, "429 StateOwnerThrottled naming the file"},
	} {
		err := tc.call()
		ex := rec.last()
		var e *openai.Error
		status, code := 200, ""
		if errors.As(err, &e) {
			status, code = e.StatusCode, e.Code
		}
		ok := false
		switch {
		case strings.HasPrefix(tc.want, "200"):
			ok = status == 200 && ex.header.Get("x-served-by") == "swc" || (status == 429 || status == 503) && strings.Contains(e.Message, f.ID)
		default:
			ok = status == 429 && code == "StateOwnerThrottled"
		}
		if !ok {
			t.Errorf("%s: %s %s answered %d %q (x-served-by %s, x-gateway-attempts %s): %.300s; want %s",
				tc.what, ex.method, ex.url, status, code, ex.header.Get("x-served-by"), ex.header.Get("x-gateway-attempts"), ex.body, tc.want)
		}
	}
}
