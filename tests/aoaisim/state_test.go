package aoaisim

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/azure"
	"github.com/openai/openai-go/v3/conversations"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
)

// startWith starts a simulator with cfg and the tests' key, accepting bearer tokens too.
func startWith(t *testing.T, cfg Config) (*Simulator, *httptest.Server) {
	t.Helper()
	cfg.APIKey, cfg.AcceptBearer = key, true
	s, srv, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return s, srv
}

// The SDK clients a test drives the simulator with: the plain client on /openai/v1/ (a bearer
// key) and the azure one (api-key, the api-version routes).
func sdkClients(srv *httptest.Server) map[string]openai.Client {
	return map[string]openai.Client{
		"v1": openai.NewClient(option.WithBaseURL(srv.URL+"/openai/v1/"), option.WithAPIKey("bearer-key"), option.WithMaxRetries(0)),
		"azure": openai.NewClient(azure.WithEndpoint(srv.URL, "2025-04-01-preview"), azure.WithAPIKey(key), azure.WithUnsafeAllowHTTP(),
			option.WithMaxRetries(0)),
	}
}

func apiError(t *testing.T, err error, status int, code string) {
	t.Helper()
	var e *openai.Error
	if !errors.As(err, &e) || e.StatusCode != status || e.Code != code {
		t.Errorf("want a %d error with code %q, got %v", status, code, err)
	}
}

func do(t *testing.T, srv *httptest.Server, method, path, contentType string, body []byte, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, bytes.NewReader(body))
	req.Header.Set("api-key", key)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// TestResponsesState: a response is stored with a unique id, plain and streamed; a turn builds
// on it; it is read, listed, cancelled and deleted; what the account does not hold (another
// account's id, a deleted or unstored one) is previous_response_not_found or 404.
func TestResponsesState(t *testing.T) {
	s, srv := startWith(t, Config{BackgroundTime: Duration(time.Hour), Deployments: map[string]Deployment{"d": {Model: "gpt-4o-mini", CompletionTokens: 4}}})
	other, otherSrv := start(t, map[string]Deployment{"d": {Model: "gpt-4o-mini"}})
	ctx := context.Background()
	for name, c := range sdkClients(srv) {
		t.Run(name, func(t *testing.T) {
			r1, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "d", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("first turn")}})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(r1.ID, "resp_") || len(r1.ID) != len("resp_")+48 || r1.Status != "completed" || len(strings.Fields(r1.OutputText())) != 4 || r1.Usage.TotalTokens == 0 || !strings.Contains(r1.RawJSON(), `"store":true`) {
				t.Errorf("first response %+v", r1)
			}
			got, err := c.Responses.Get(ctx, r1.ID, responses.ResponseGetParams{})
			if err != nil || got.ID != r1.ID || got.OutputText() != r1.OutputText() {
				t.Errorf("get: %v %+v", err, got)
			}
			r2, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "d", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("second turn")},
				PreviousResponseID: openai.String(r1.ID), Instructions: openai.String("be brief")})
			if err != nil || r2.ID == r1.ID || r2.PreviousResponseID != r1.ID || r2.Instructions.OfString != "be brief" {
				t.Fatalf("second turn: %v %+v", err, r2)
			}
			items, err := c.Responses.InputItems.List(ctx, r2.ID, responses.InputItemListParams{})
			if err != nil || len(items.Data) != 1 || items.Data[0].Type != "message" || items.Data[0].Role != "user" ||
				!strings.Contains(items.Data[0].RawJSON(), `"content":[{"text":"second turn","type":"input_text"}]`) || !strings.Contains(items.RawJSON(), `"first_id":"msg_`) {
				t.Errorf("input items: %v %+v", err, items)
			}

			// Streamed: response.created names the id, deltas, then response.completed.
			stream := c.Responses.NewStreaming(ctx, responses.ResponseNewParams{Model: "d", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("third")},
				PreviousResponseID: openai.String(r2.ID)})
			var types []string
			var streamID, text string
			for stream.Next() {
				ev := stream.Current()
				types = append(types, ev.Type)
				switch ev.Type {
				case "response.created":
					streamID = ev.Response.ID
				case "response.output_text.delta":
					text += ev.Delta
				case "response.completed":
					if ev.Response.ID != streamID || ev.Response.PreviousResponseID != r2.ID {
						t.Errorf("completed event %+v", ev.Response)
					}
				}
			}
			if err := stream.Err(); err != nil || len(types) != 6 || types[0] != "response.created" || types[5] != "response.completed" || !strings.HasPrefix(streamID, "resp_") {
				t.Fatalf("stream: %v %v %q", err, types, streamID)
			}
			if got, err := c.Responses.Get(ctx, streamID, responses.ResponseGetParams{}); err != nil || got.Status != "completed" || got.OutputText() != text {
				t.Errorf("streamed response stored: %v %+v", err, got)
			}

			// Cancel: a synchronous response cannot be; a background one is queued until then.
			if _, err := c.Responses.Cancel(ctx, r1.ID); err == nil {
				t.Errorf("cancelling a synchronous response worked")
			}
			bg, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "d", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("later")}, Background: openai.Bool(true)})
			if err != nil || bg.Status != "queued" || !bg.Background || len(bg.Output) != 0 {
				t.Fatalf("background: %v %+v", err, bg)
			}
			if got, err := c.Responses.Cancel(ctx, bg.ID); err != nil || got.Status != "cancelled" || got.ID != bg.ID {
				t.Errorf("cancel: %v %+v", err, got)
			}

			// Not held: store false, deleted, made up, or another account's.
			unstored, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "d", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("x")}, Store: openai.Bool(false)})
			if err != nil || !strings.Contains(unstored.RawJSON(), `"store":false`) {
				t.Fatal(err)
			}
			_, err = c.Responses.Get(ctx, unstored.ID, responses.ResponseGetParams{})
			apiError(t, err, 404, "")
			if err := c.Responses.Delete(ctx, r2.ID); err != nil {
				t.Errorf("delete: %v", err)
			}
			_, err = c.Responses.Get(ctx, r2.ID, responses.ResponseGetParams{})
			apiError(t, err, 404, "")
			for _, id := range []string{unstored.ID, r2.ID, "resp_nope"} {
				_, err = c.Responses.New(ctx, responses.ResponseNewParams{Model: "d", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("x")}, PreviousResponseID: openai.String(id)})
				apiError(t, err, 400, "previous_response_not_found")
			}
		})
	}
	// State is the account's own: the other simulator holds none of it.
	r := s.Records()
	var held string
	for _, rec := range r {
		if rec.Method == "POST" && rec.Status == 200 && strings.HasSuffix(rec.Path, "responses") {
			var v struct{ ID string }
			json.Unmarshal(rec.Response, &v)
			held = v.ID
			break
		}
	}
	body := fmt.Sprintf(`{"model":"d","input":"x","previous_response_id":%q}`, held)
	resp, b := do(t, otherSrv, "POST", "/openai/v1/responses", "application/json", []byte(body))
	want := fmt.Sprintf(`{"error":{"code":"previous_response_not_found","message":"Previous response with id '%s' not found.","param":"previous_response_id","type":"invalid_request_error"}}`, held)
	if resp.StatusCode != 400 || string(b) != want {
		t.Errorf("another account's response: %d %s", resp.StatusCode, b)
	}
	if resp, _ := do(t, otherSrv, "GET", "/openai/v1/responses/"+held, "", nil); resp.StatusCode != 404 {
		t.Errorf("another account's GET: %d", resp.StatusCode)
	}
	if st := other.Stats()["d"]; st.BadRequest != 1 {
		t.Errorf("other account %+v", st)
	}
}

// TestBackgroundCompletes: a background response is queued, then completed on time.
func TestBackgroundCompletes(t *testing.T) {
	_, srv := startWith(t, Config{BackgroundTime: Duration(100 * time.Millisecond), Deployments: map[string]Deployment{"d": {Model: "m"}}})
	_, b := do(t, srv, "POST", "/openai/responses?api-version=preview", "application/json", []byte(`{"model":"d","input":"x","background":true}`))
	var r struct{ ID, Status string }
	json.Unmarshal(b, &r)
	if r.Status != "queued" {
		t.Fatalf("%s", b)
	}
	time.Sleep(150 * time.Millisecond)
	_, b = do(t, srv, "GET", "/openai/responses/"+r.ID+"?api-version=preview", "", nil)
	json.Unmarshal(b, &r)
	if r.Status != "completed" || !strings.Contains(string(b), "output_text") {
		t.Errorf("after its time: %s", b)
	}
	if resp, _ := do(t, srv, "POST", "/openai/v1/responses/"+r.ID+"/cancel", "", nil); resp.StatusCode != 400 {
		t.Errorf("cancelling a completed response: %d", resp.StatusCode)
	}
}

// TestConversationsState: a conversation holds its items and the turns made in it.
func TestConversationsState(t *testing.T) {
	_, srv := start(t, map[string]Deployment{"d": {Model: "gpt-4o-mini", CompletionTokens: 3}})
	_, otherSrv := start(t, map[string]Deployment{"d": {Model: "gpt-4o-mini"}})
	ctx := context.Background()
	for name, c := range sdkClients(srv) {
		t.Run(name, func(t *testing.T) {
			conv, err := c.Conversations.New(ctx, conversations.ConversationNewParams{
				Items: []responses.ResponseInputItemUnionParam{responses.ResponseInputItemParamOfMessage("Remember 42.", responses.EasyInputMessageRoleUser)},
			})
			if err != nil || !strings.HasPrefix(conv.ID, "conv_") || conv.Object != "conversation" || conv.CreatedAt == 0 {
				t.Fatalf("create: %v %+v", err, conv)
			}
			r, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "d", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Which number?")},
				Conversation: responses.ResponseNewParamsConversationUnion{OfString: openai.String(conv.ID)}})
			if err != nil || r.Conversation.ID != conv.ID {
				t.Fatalf("turn: %v %+v", err, r)
			}
			added, err := c.Conversations.Items.New(ctx, conv.ID, conversations.ItemNewParams{
				Items: []responses.ResponseInputItemUnionParam{responses.ResponseInputItemParamOfMessage("And 7.", responses.EasyInputMessageRoleUser)},
			})
			if err != nil || len(added.Data) != 1 || added.FirstID != added.Data[0].ID {
				t.Fatalf("add items: %v %+v", err, added)
			}
			items, err := c.Conversations.Items.List(ctx, conv.ID, conversations.ItemListParams{Order: conversations.ItemListParamsOrderAsc})
			if err != nil || len(items.Data) != 4 {
				t.Fatalf("items: %v %+v", err, items)
			}
			var roles []string
			for _, it := range items.Data {
				roles = append(roles, it.Role)
			}
			if strings.Join(roles, ",") != "user,user,assistant,user" || !strings.Contains(items.Data[2].RawJSON(), strconv.Quote(r.OutputText())) {
				t.Errorf("items in order: %v %s", roles, items.RawJSON())
			}
			if got, err := c.Conversations.Get(ctx, conv.ID); err != nil || got.ID != conv.ID {
				t.Errorf("get: %v %+v", err, got)
			}
			if del, err := c.Conversations.Delete(ctx, conv.ID); err != nil || !del.Deleted || del.ID != conv.ID {
				t.Errorf("delete: %v %+v", err, del)
			}
			_, err = c.Responses.New(ctx, responses.ResponseNewParams{Model: "d", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("x")},
				Conversation: responses.ResponseNewParamsConversationUnion{OfConversationObject: &responses.ResponseConversationParam{ID: conv.ID}}})
			apiError(t, err, 400, "previous_response_not_found")
		})
	}
	// The object form {"id": ...} too, and another account does not know the conversation.
	_, b := do(t, srv, "POST", "/openai/v1/conversations", "application/json", []byte(`{}`))
	var conv struct{ ID string }
	json.Unmarshal(b, &conv)
	if resp, b := do(t, srv, "POST", "/openai/v1/responses", "application/json", []byte(`{"model":"d","input":"x","conversation":{"id":"`+conv.ID+`"}}`)); resp.StatusCode != 200 || !strings.Contains(string(b), `"conversation":{"id":"`+conv.ID+`"}`) {
		t.Errorf("object form: %d %s", resp.StatusCode, b)
	}
	resp, b := do(t, otherSrv, "POST", "/openai/v1/responses", "application/json", []byte(`{"model":"d","input":"x","conversation":"`+conv.ID+`"}`))
	if resp.StatusCode != 400 || !strings.Contains(string(b), `"code":"previous_response_not_found"`) || !strings.Contains(string(b), "Conversation with id '"+conv.ID+"' not found.") {
		t.Errorf("another account's conversation: %d %s", resp.StatusCode, b)
	}
	if resp, _ := do(t, otherSrv, "GET", "/openai/v1/conversations/"+conv.ID+"/items", "", nil); resp.StatusCode != 404 {
		t.Errorf("another account's items: %d", resp.StatusCode)
	}
}

// TestFilesBatchesVectorStores: uploads, their content, a batch on one, a vector store with
// one; another account has none of them.
func TestFilesBatchesVectorStores(t *testing.T) {
	_, srv := start(t, map[string]Deployment{"d": {Model: "gpt-4o-mini"}})
	_, otherSrv := start(t, map[string]Deployment{"d": {Model: "gpt-4o-mini"}})
	ctx := context.Background()
	jsonl := []byte(`{"custom_id":"1","method":"POST","url":"/chat/completions","body":{"model":"d","messages":[{"role":"user","content":"hi"}]}}` + "\n" +
		`{"custom_id":"2","method":"POST","url":"/chat/completions","body":{"model":"d","messages":[{"role":"user","content":"yo"}]}}` + "\n")
	for name, c := range sdkClients(srv) {
		t.Run(name, func(t *testing.T) {
			f, err := c.Files.New(ctx, openai.FileNewParams{File: openai.File(bytes.NewReader(jsonl), "batch.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch})
			if err != nil || !strings.HasPrefix(f.ID, "file-") || f.Bytes != int64(len(jsonl)) || f.Filename != "batch.jsonl" || f.Purpose != "batch" || f.Status != "processed" {
				t.Fatalf("upload: %v %+v", err, f)
			}
			if got, err := c.Files.Get(ctx, f.ID); err != nil || got.ID != f.ID {
				t.Errorf("get: %v %+v", err, got)
			}
			list, err := c.Files.List(ctx, openai.FileListParams{})
			if err != nil || len(list.Data) == 0 || list.Data[0].ID != f.ID {
				t.Errorf("list (newest first): %v %+v", err, list)
			}
			content, err := c.Files.Content(ctx, f.ID)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(content.Body)
			content.Body.Close()
			if !bytes.Equal(b, jsonl) {
				t.Errorf("content %q", b)
			}

			batch, err := c.Batches.New(ctx, openai.BatchNewParams{InputFileID: f.ID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions, CompletionWindow: openai.BatchNewParamsCompletionWindow24h})
			if err != nil || !strings.HasPrefix(batch.ID, "batch_") || batch.Status != "validating" || batch.InputFileID != f.ID || batch.RequestCounts.Total != 2 {
				t.Fatalf("batch: %v %+v", err, batch)
			}
			if got, err := c.Batches.Get(ctx, batch.ID); err != nil || got.Status != "in_progress" {
				t.Errorf("batch get: %v %+v", err, got)
			}
			if got, err := c.Batches.Cancel(ctx, batch.ID); err != nil || got.Status != "cancelling" {
				t.Errorf("batch cancel: %v %+v", err, got)
			}
			if got, err := c.Batches.Get(ctx, batch.ID); err != nil || got.Status != "cancelled" || got.CancelledAt == 0 {
				t.Errorf("batch after cancel: %v %+v", err, got)
			}

			vs, err := c.VectorStores.New(ctx, openai.VectorStoreNewParams{Name: openai.String("docs"), FileIDs: []string{f.ID}})
			if err != nil || !strings.HasPrefix(vs.ID, "vs_") || vs.Name != "docs" || vs.FileCounts.Total != 1 || vs.Status != "completed" {
				t.Fatalf("vector store: %v %+v", err, vs)
			}
			if got, err := c.VectorStores.Get(ctx, vs.ID); err != nil || got.ID != vs.ID {
				t.Errorf("vector store get: %v %+v", err, got)
			}
			if del, err := c.VectorStores.Delete(ctx, vs.ID); err != nil || !del.Deleted {
				t.Errorf("vector store delete: %v %+v", err, del)
			}
			if _, err := c.VectorStores.Get(ctx, vs.ID); err == nil {
				t.Errorf("a deleted vector store is still there")
			}
			if del, err := c.Files.Delete(ctx, f.ID); err != nil || !del.Deleted || del.ID != f.ID {
				t.Errorf("file delete: %v %+v", err, del)
			}
			_, err = c.Files.Get(ctx, f.ID)
			apiError(t, err, 404, "")
		})
	}
	// Another account knows none of this one's files.
	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	mw.WriteField("purpose", "batch")
	fw, _ := mw.CreateFormFile("file", "b.jsonl")
	fw.Write(jsonl)
	mw.Close()
	_, b := do(t, srv, "POST", "/openai/files?api-version=2024-10-21", mw.FormDataContentType(), form.Bytes())
	var f struct{ ID string }
	json.Unmarshal(b, &f)
	resp, b := do(t, otherSrv, "POST", "/openai/v1/batches", "application/json", []byte(`{"input_file_id":"`+f.ID+`","endpoint":"/v1/chat/completions","completion_window":"24h"}`))
	if resp.StatusCode != 400 || !strings.Contains(string(b), "input_file_id") {
		t.Errorf("a batch on another account's file: %d %s", resp.StatusCode, b)
	}
	for _, p := range []string{"/openai/v1/files/" + f.ID, "/openai/v1/files/" + f.ID + "/content"} {
		if resp, _ := do(t, otherSrv, "GET", p, "", nil); resp.StatusCode != 404 {
			t.Errorf("%s on another account: %d", p, resp.StatusCode)
		}
	}
	if resp, _ := do(t, otherSrv, "POST", "/openai/v1/vector_stores", "application/json", []byte(`{"file_ids":["`+f.ID+`"]}`)); resp.StatusCode != 400 {
		t.Errorf("a vector store on another account's file: %d", resp.StatusCode)
	}
	// A Responses turn naming a vector store (file_search) or a file (input_file) of another
	// account is refused; on the account that holds them it is served.
	_, b = do(t, srv, "POST", "/openai/v1/vector_stores", "application/json", []byte(`{"file_ids":["`+f.ID+`"]}`))
	var vs struct{ ID string }
	json.Unmarshal(b, &vs)
	search := `{"model":"d","input":"find it","tools":[{"type":"file_search","vector_store_ids":["` + vs.ID + `"]}]}`
	file := `{"model":"d","input":[{"role":"user","content":[{"type":"input_file","file_id":"` + f.ID + `"},{"type":"input_text","text":"summarise"}]}]}`
	for _, body := range []string{search, file} {
		if resp, b := do(t, otherSrv, "POST", "/openai/v1/responses", "application/json", []byte(body)); resp.StatusCode != 400 || !strings.Contains(string(b), "not found") {
			t.Errorf("another account's state in the body: %d %s", resp.StatusCode, b)
		}
		if resp, b := do(t, srv, "POST", "/openai/v1/responses", "application/json", []byte(body)); resp.StatusCode != 200 {
			t.Errorf("the account's own state in the body: %d %s", resp.StatusCode, b)
		}
	}
	// The api-version form needs its api-version; without it the path is unknown.
	if resp, _ := do(t, srv, "GET", "/openai/files/"+f.ID, "", nil); resp.StatusCode != 404 {
		t.Errorf("no api-version: %d", resp.StatusCode)
	}
	if resp, _ := do(t, srv, "GET", "/openai/files/"+f.ID+"?api-version=2024-10-21", "", nil, "api-key", "wrong"); resp.StatusCode != 401 {
		t.Errorf("wrong key on a stored resource: %d", resp.StatusCode)
	}
}

// TestMedia: images and audio on the v1 route (the body's or the form's model) and on the
// deployments route, in the shapes the SDK parses; the 2 MB upload arrives whole.
func TestMedia(t *testing.T) {
	s, srv := start(t, map[string]Deployment{
		"img": {Model: "gpt-image-1"}, "stt": {Model: "whisper"}, "tts": {Model: "gpt-4o-mini-tts"}, "chat": {Model: "gpt-4o-mini"},
	})
	ctx := context.Background()
	audio := bytes.Repeat([]byte("RIFF-audio-"), 2<<20/11+1)[:2<<20]
	sum := sha256.Sum256(audio)
	for name, c := range sdkClients(srv) {
		t.Run(name, func(t *testing.T) {
			s.ResetRecords()
			img, err := c.Images.Generate(ctx, openai.ImageGenerateParams{Model: "img", Prompt: "a gateway"})
			if err != nil || len(img.Data) != 1 || img.Created == 0 || img.Usage.TotalTokens == 0 {
				t.Fatalf("generate: %v %+v", err, img)
			}
			if png, err := base64.StdEncoding.DecodeString(img.Data[0].B64JSON); err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
				t.Errorf("image is not a PNG: %v", err)
			}
			edit, err := c.Images.Edit(ctx, openai.ImageEditParams{Model: "img", Prompt: "brighter",
				Image: openai.ImageEditParamsImageUnion{OfFile: openai.File(bytes.NewReader([]byte("\x89PNG fake")), "in.png", "image/png")}})
			if err != nil || len(edit.Data) != 1 {
				t.Fatalf("edit: %v %+v", err, edit)
			}
			tr, err := c.Audio.Transcriptions.New(ctx, openai.AudioTranscriptionNewParams{Model: "stt", File: openai.File(bytes.NewReader(audio), "talk.wav", "audio/wav")})
			want := fmt.Sprintf("Transcribed talk.wav (%d bytes, sha256 %s): ", len(audio), hex.EncodeToString(sum[:8]))
			if err != nil || !strings.HasPrefix(tr.Text, want) {
				t.Fatalf("transcription: %v %+v", err, tr)
			}
			sp, err := c.Audio.Speech.New(ctx, openai.AudioSpeechNewParams{Model: "tts", Input: "Hello there", Voice: openai.AudioSpeechNewParamsVoiceUnion{OfString: openai.String("alloy")}})
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(sp.Body)
			sp.Body.Close()
			if !bytes.Equal(b, speechBytes("Hello there")) || sp.Header.Get("Content-Type") != "audio/mpeg" {
				t.Errorf("speech: %d bytes, %s", len(b), sp.Header.Get("Content-Type"))
			}
			recs := s.Records()
			if len(recs) != 4 {
				t.Fatalf("%d records", len(recs))
			}
			for i, dep := range []string{"img", "img", "stt", "tts"} {
				if recs[i].Deployment != dep || recs[i].Model != dep || recs[i].Status != 200 {
					t.Errorf("record %d: %s %s deployment %q model %q status %d", i, recs[i].Method, recs[i].Path, recs[i].Deployment, recs[i].Model, recs[i].Status)
				}
				if name == "azure" && !strings.HasPrefix(recs[i].Path, "/openai/deployments/"+dep+"/") || name == "v1" && !strings.HasPrefix(recs[i].Path, "/openai/v1/") {
					t.Errorf("record %d path %s", i, recs[i].Path)
				}
			}
			if !bytes.Contains(recs[2].Body, audio) {
				t.Errorf("the transcription's form did not hold the whole file")
			}
		})
	}
	// A multipart v1 request without a model names no deployment; images on a chat model are not
	// served.
	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	fw, _ := mw.CreateFormFile("file", "a.wav")
	fw.Write([]byte("x"))
	mw.Close()
	if resp, b := do(t, srv, "POST", "/openai/v1/audio/transcriptions", mw.FormDataContentType(), form.Bytes()); resp.StatusCode != 404 || !strings.Contains(string(b), "DeploymentNotFound") {
		t.Errorf("no model: %d %s", resp.StatusCode, b)
	}
	if resp, b := do(t, srv, "POST", "/openai/deployments/chat/images/generations?api-version=2024-10-21", "application/json", []byte(`{"prompt":"x"}`)); resp.StatusCode != 400 || !strings.Contains(string(b), "OperationNotSupported") {
		t.Errorf("images on a chat model: %d %s", resp.StatusCode, b)
	}
	if resp, b := do(t, srv, "POST", "/openai/deployments/stt/audio/transcriptions?api-version=2024-10-21", mw.FormDataContentType(), form.Bytes(), "x", "y"); resp.StatusCode != 200 || !strings.Contains(string(b), `"text":"Transcribed a.wav (1 bytes`) {
		t.Errorf("deployments route, no model field: %d %s", resp.StatusCode, b)
	}
	if resp, b := do(t, srv, "POST", "/openai/v1/audio/speech", "application/json", []byte(`{"model":"tts","input":"x"}`)); resp.StatusCode != 400 || !strings.Contains(string(b), "voice") {
		t.Errorf("speech without a voice: %d %s", resp.StatusCode, b)
	}
}

// TestRecordsAndGzip: every request is recorded with what it named, its credential, its body
// and the answer; a compressing account gzips JSON for callers that accept it, and the record
// holds the answer before compression.
func TestRecordsAndGzip(t *testing.T) {
	s, srv, err := Start(Config{APIKey: key, AcceptBearer: true, Gzip: true, MaxRecords: 3, Deployments: map[string]Deployment{"d": {Model: "m"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	body := []byte(`{"model":"d","messages":[{"role":"user","content":"hi"}]}`)
	resp, raw := do(t, srv, "POST", "/openai/v1/chat/completions", "application/json", body, "Accept-Encoding", "gzip", "api-key", "", "Authorization", "Bearer tok-1")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("%d %v", resp.StatusCode, resp.Header)
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := io.ReadAll(zr)
	rec, ok := s.RecordOf(resp.Header.Get("apim-request-id"), time.Second)
	if !ok || !rec.Compressed || !bytes.Equal(rec.Response, plain) || !bytes.Equal(rec.Body, body) || rec.Deployment != "d" || rec.Model != "d" ||
		rec.Authorization != "Bearer tok-1" || rec.APIKey != "" || rec.RequestHeader.Get("Accept-Encoding") != "gzip" || rec.Status != 200 || rec.Path != "/openai/v1/chat/completions" || rec.Header.Get("Content-Encoding") != "gzip" {
		t.Errorf("record %+v", rec)
	}
	// Without Accept-Encoding the answer is plain; a stream is never compressed.
	resp, raw = do(t, srv, "POST", "/openai/deployments/d/chat/completions?api-version=1", "application/json", body, "Accept-Encoding", "identity")
	rec, _ = s.RecordOf(resp.Header.Get("apim-request-id"), time.Second)
	if resp.Header.Get("Content-Encoding") != "" || !bytes.Equal(raw, rec.Response) || rec.APIKey != key || rec.Deployment != "d" || rec.Compressed {
		t.Errorf("plain answer %v, record %+v", resp.Header, rec)
	}
	resp, raw = do(t, srv, "POST", "/openai/v1/responses", "application/json", []byte(`{"model":"d","input":"x","stream":true}`), "Accept-Encoding", "gzip")
	rec, _ = s.RecordOf(resp.Header.Get("apim-request-id"), time.Second)
	if resp.Header.Get("Content-Encoding") != "" || !bytes.Equal(raw, rec.Response) || !strings.HasPrefix(string(raw), "event: response.created") {
		t.Errorf("stream %v %q", resp.Header, raw)
	}
	// Bounded: the last three.
	do(t, srv, "GET", "/openai/v1/models", "", nil)
	do(t, srv, "GET", "/openai/v1/files", "", nil)
	recs := s.Records()
	if len(recs) != 3 || recs[2].Path != "/openai/v1/files" || recs[1].Path != "/openai/v1/models" {
		t.Errorf("records %d", len(recs))
	}
	s.ResetRecords()
	if len(s.Records()) != 0 {
		t.Errorf("reset kept records")
	}
	if _, ok := s.RecordOf("nope", 10*time.Millisecond); ok {
		t.Errorf("found an unknown record")
	}
}

// TestThrottle: Throttle refuses every request of the deployment with the service's 429 until
// it ends, whatever the quota; calls on stored resources are not throttled.
func TestThrottle(t *testing.T) {
	s, srv := start(t, map[string]Deployment{"d": {Model: "m"}})
	s.Throttle("d", 400*time.Millisecond)
	resp, b := do(t, srv, "POST", "/openai/v1/images/generations", "application/json", []byte(`{"model":"d","prompt":"x"}`))
	ms, _ := strconv.Atoi(resp.Header.Get("retry-after-ms"))
	if resp.StatusCode != 429 || ms < 300 || ms > 400 || resp.Header.Get("retry-after") != "1" || !strings.Contains(string(b), "ImageGenerations_Create Operation under Azure OpenAI API version v1") {
		t.Fatalf("%d %v %s", resp.StatusCode, resp.Header, b)
	}
	if resp, _ := do(t, srv, "GET", "/openai/v1/files", "", nil); resp.StatusCode != 200 {
		t.Errorf("a list while throttled: %d", resp.StatusCode)
	}
	time.Sleep(time.Duration(ms+2) * time.Millisecond) // retry-after-ms is whole milliseconds, truncated
	if resp, _ := do(t, srv, "POST", chatPath, "application/json", []byte(`{"messages":[]}`)); resp.StatusCode != 200 {
		t.Errorf("after the throttle: %d", resp.StatusCode)
	}
	s.Throttle("d", time.Minute)
	s.Throttle("d", 0)
	if resp, _ := do(t, srv, "POST", chatPath, "application/json", []byte(`{"messages":[]}`)); resp.StatusCode != 200 {
		t.Errorf("after lifting it: %d", resp.StatusCode)
	}
	if st := s.Stats()["d"]; st.Throttled != 1 || st.Served != 2 {
		t.Errorf("stats %+v", st)
	}
}

// TestModelsList: GET /openai/v1/models (and /openai/models?api-version=) lists the models the
// account's deployments run, as the SDK's Models.List parses them.
func TestModelsList(t *testing.T) {
	_, srv := start(t, map[string]Deployment{"a": {Model: "gpt-4o-mini"}, "b": {Model: "gpt-4o-mini"}, "c": {Model: "whisper"}})
	for name, c := range sdkClients(srv) {
		page, err := c.Models.List(context.Background())
		if err != nil || len(page.Data) != 2 || page.Data[0].ID != "gpt-4o-mini" || page.Data[1].ID != "whisper" || page.Data[0].Object != "model" {
			t.Errorf("%s: %v %+v", name, err, page)
		}
	}
}
