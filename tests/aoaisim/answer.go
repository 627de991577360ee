package aoaisim

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

var words = []string{"The", "gateway", "answered", "from", "the", "region", "that", "had", "room", "for", "this", "request", "and", "kept", "the", "stream", "flowing", "without", "a", "pause"}

// answer generates one successful response.
type answer struct {
	sim        *Simulator
	dep        *deployment
	op         operation
	model      string
	prompt     int
	completion int
	finish     string
	fault      fault
	inputs     int   // embeddings: how many inputs
	turn       *turn // responses: the turn as the account's state knows it
}

func (a *answer) token(i int) string { return words[i%len(words)] + " " }

func (a *answer) text() string {
	var b strings.Builder
	for i := 0; i < a.completion; i++ {
		b.WriteString(a.token(i))
	}
	return b.String()
}

// sleep waits d or until the caller goes away, reporting whether to go on.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (a *answer) served() {
	a.sim.count(a.dep, func(st *Stats) {
		st.Served++
		st.PromptTokens += a.prompt
		st.CompletionTokens += a.completion
	})
}

var safeFilter = map[string]any{
	"hate": map[string]any{"filtered": false, "severity": "safe"}, "self_harm": map[string]any{"filtered": false, "severity": "safe"},
	"sexual": map[string]any{"filtered": false, "severity": "safe"}, "violence": map[string]any{"filtered": false, "severity": "safe"},
}

func promptFilter() []any {
	return []any{map[string]any{"prompt_index": 0, "content_filter_results": safeFilter}}
}

func (a *answer) usage() map[string]any {
	if a.op.kind == "responses" {
		return map[string]any{"input_tokens": a.prompt, "output_tokens": a.completion, "total_tokens": a.prompt + a.completion,
			"input_tokens_details": map[string]any{"cached_tokens": 0}, "output_tokens_details": map[string]any{"reasoning_tokens": 0}}
	}
	return map[string]any{"prompt_tokens": a.prompt, "completion_tokens": a.completion, "total_tokens": a.prompt + a.completion}
}

// plain answers without streaming: Azure sends the headers only once the completion is done.
func (a *answer) plain(w http.ResponseWriter, r *http.Request) {
	cfg := a.dep.cfg
	wait := cfg.TimeToFirstToken.d() + time.Duration(a.completion)*cfg.PerToken.d() + a.fault.firstTokenDelay
	if !sleep(r.Context(), wait) {
		return
	}
	id, created := newID(), time.Now().Unix()
	var body any
	switch a.op.kind {
	case "chat":
		body = map[string]any{
			"id": "chatcmpl-" + id, "object": "chat.completion", "created": created, "model": a.model,
			"prompt_filter_results": promptFilter(),
			"choices": []any{map[string]any{
				"index": 0, "finish_reason": a.finish, "logprobs": nil,
				"message":                map[string]any{"role": "assistant", "content": a.text()},
				"content_filter_results": safeFilter,
			}},
			"usage": a.usage(), "system_fingerprint": "fp_sim",
		}
	case "completions":
		body = map[string]any{
			"id": "cmpl-" + id, "object": "text_completion", "created": created, "model": a.model,
			"prompt_filter_results": promptFilter(),
			"choices":               []any{map[string]any{"index": 0, "text": a.text(), "finish_reason": a.finish, "logprobs": nil, "content_filter_results": safeFilter}},
			"usage":                 a.usage(),
		}
	case "embeddings":
		body = map[string]any{
			"object": "list", "model": a.model,
			"data":  a.embeddings(),
			"usage": map[string]any{"prompt_tokens": a.prompt, "total_tokens": a.prompt},
		}
	case "responses":
		resp := a.response(id, created, "completed")
		if a.turn != nil {
			a.sim.state.saveTurn(a.turn, resp, true)
		}
		body = resp
	}
	b, _ := json.Marshal(body)
	if a.fault.kind == "cut" {
		noCompression(w)
		// Promise the whole body, send half, and break the connection.
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(b[:len(b)/2])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
	writeJSON(w, http.StatusOK, string(b))
	a.served()
}

func (a *answer) embeddings() []any {
	var data []any
	n := max(1, a.inputs)
	for i := 0; i < n; i++ {
		data = append(data, map[string]any{"object": "embedding", "index": i, "embedding": []float64{0.0023, -0.0093, 0.0158, -0.0271, 0.0034, 0.0121, -0.0047, 0.0069}})
	}
	return data
}

// response is a Responses API response object in the given status.
func (a *answer) response(id string, created int64, status string) map[string]any {
	respID, msgID := "resp_"+id, "msg_"+id
	if a.turn != nil {
		respID, msgID = a.turn.id, "msg_"+strings.TrimPrefix(a.turn.id, "resp_")
	}
	out := []any{}
	if status == "completed" {
		out = append(out, map[string]any{
			"type": "message", "id": msgID, "status": "completed", "role": "assistant",
			"content": []any{map[string]any{"type": "output_text", "text": a.text(), "annotations": []any{}, "logprobs": []any{}}},
		})
	}
	resp := map[string]any{"id": respID, "object": "response", "created_at": created, "status": status, "model": a.model, "output": out,
		"error": nil, "incomplete_details": nil, "instructions": nil, "metadata": map[string]any{}, "parallel_tool_calls": true,
		"temperature": 1.0, "top_p": 1.0, "tool_choice": "auto", "tools": []any{}, "text": map[string]any{"format": map[string]any{"type": "text"}},
		"truncation": "disabled", "max_output_tokens": nil, "reasoning": map[string]any{"effort": nil, "summary": nil}, "user": nil,
		"background": false, "previous_response_id": nil, "conversation": nil, "store": true, "usage": nil}
	if t := a.turn; t != nil {
		for k, v := range t.echo {
			resp[k] = v
		}
		resp["background"], resp["store"] = t.background, t.store
		if t.previous != "" {
			resp["previous_response_id"] = t.previous
		}
		if t.conversation != "" {
			resp["conversation"] = map[string]any{"id": t.conversation}
		}
	}
	if status == "completed" {
		resp["usage"] = a.usage()
		resp["completed_at"] = time.Now().Unix()
	}
	return resp
}

// stream answers with server-sent events in the service's order.
func (a *answer) stream(w http.ResponseWriter, r *http.Request, includeUsage bool) {
	ctx := r.Context()
	cfg := a.dep.cfg
	flusher := w.(http.Flusher)
	if !sleep(ctx, cfg.TimeToFirstToken.d()) {
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	flusher.Flush()

	sent := 0
	send := func(event string) bool {
		if a.fault.kind == "cut" && sent == 2 {
			panic(http.ErrAbortHandler) // the connection breaks mid-stream
		}
		if a.fault.kind == "stall" && sent == 2 {
			<-ctx.Done()
			return false
		}
		if _, err := fmt.Fprint(w, event); err != nil {
			return false
		}
		flusher.Flush()
		sent++
		return true
	}
	data := func(v any) string {
		b, _ := json.Marshal(v)
		return "data: " + string(b) + "\n\n"
	}
	if a.fault.firstTokenDelay > 0 && !sleep(ctx, a.fault.firstTokenDelay) {
		return
	}
	id, created := newID(), time.Now().Unix()

	if a.op.kind == "responses" {
		a.streamResponse(ctx, send, id, created)
		return
	}
	object, prefix := "chat.completion.chunk", "chatcmpl-"
	if a.op.kind == "completions" {
		object, prefix = "text_completion", "cmpl-"
	}
	chunk := func(choices []any) map[string]any {
		return map[string]any{"id": prefix + id, "object": object, "created": created, "model": a.model, "system_fingerprint": "fp_sim", "choices": choices}
	}
	// The first event carries only the prompt's filter results, with empty id and model.
	if !send(data(map[string]any{"choices": []any{}, "created": 0, "id": "", "model": "", "object": "", "prompt_filter_results": promptFilter()})) {
		return
	}
	if a.op.kind == "chat" {
		if !send(data(chunk([]any{map[string]any{"index": 0, "delta": map[string]any{"role": "assistant", "content": ""}, "finish_reason": nil, "logprobs": nil, "content_filter_results": map[string]any{}}}))) {
			return
		}
	}
	for i := 0; i < a.completion; i++ {
		if i > 0 && !sleep(ctx, cfg.PerToken.d()) {
			return
		}
		var choice map[string]any
		if a.op.kind == "chat" {
			choice = map[string]any{"index": 0, "delta": map[string]any{"content": a.token(i)}, "finish_reason": nil, "logprobs": nil, "content_filter_results": safeFilter}
		} else {
			choice = map[string]any{"index": 0, "text": a.token(i), "finish_reason": nil, "logprobs": nil, "content_filter_results": safeFilter}
		}
		if !send(data(chunk([]any{choice}))) {
			return
		}
		if i == 0 && a.fault.kind == "malformed" && !send("data: {not json\n\n") {
			return
		}
	}
	final := map[string]any{"index": 0, "finish_reason": a.finish, "logprobs": nil, "content_filter_results": map[string]any{}}
	if a.op.kind == "chat" {
		final["delta"] = map[string]any{}
	} else {
		final["text"] = ""
	}
	if !send(data(chunk([]any{final}))) {
		return
	}
	if includeUsage {
		u := chunk([]any{})
		u["usage"] = a.usage()
		if !send(data(u)) {
			return
		}
	}
	if send("data: [DONE]\n\n") {
		a.served()
	}
}

// streamResponse sends the Responses API's typed events; that API ends without [DONE].
func (a *answer) streamResponse(ctx context.Context, send func(string) bool, id string, created int64) {
	seq := 0
	event := func(typ string, fields map[string]any) string {
		fields["type"] = typ
		fields["sequence_number"] = seq
		seq++
		b, _ := json.Marshal(fields)
		return "event: " + typ + "\ndata: " + string(b) + "\n\n"
	}
	started := a.response(id, created, "in_progress")
	msgID := "msg_" + strings.TrimPrefix(started["id"].(string), "resp_")
	if a.turn != nil {
		a.sim.state.saveTurn(a.turn, started, false)
	}
	if !send(event("response.created", map[string]any{"response": started})) {
		return
	}
	for i := 0; i < a.completion; i++ {
		if i > 0 && !sleep(ctx, a.dep.cfg.PerToken.d()) {
			return
		}
		if !send(event("response.output_text.delta", map[string]any{"item_id": msgID, "output_index": 0, "content_index": 0, "delta": a.token(i)})) {
			return
		}
		if i == 0 && a.fault.kind == "malformed" && !send("event: response.output_text.delta\ndata: {not json\n\n") {
			return
		}
	}
	done := a.response(id, created, "completed")
	if a.turn != nil {
		a.sim.state.saveTurn(a.turn, done, true)
	}
	if send(event("response.completed", map[string]any{"response": done})) {
		a.served()
	}
}

func (d Duration) d() time.Duration { return time.Duration(d) }
