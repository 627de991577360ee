package aoaisim

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Images and audio, on the deployments route (/openai/deployments/{name}/images/generations,
// .../images/edits, .../audio/transcriptions, .../audio/translations, .../audio/speech) and on
// the v1 route, where a JSON body's model or the multipart form's model field names the
// deployment. Answers are the shapes openai-go parses as ImagesResponse, Transcription and
// Translation; speech is audio bytes.

// onePixelPNG is a valid 1x1 PNG, the image every generation and edit returns.
const onePixelPNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="

// parseForm reads a multipart/form-data body.
func parseForm(contentType string, body []byte) (*multipart.Form, error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return nil, errors.New("the content type is not multipart/form-data with a boundary")
	}
	return multipart.NewReader(bytes.NewReader(body), params["boundary"]).ReadForm(64 << 20)
}

// mediaRequestError is the 400 for an images or audio request missing what it needs, or "".
func mediaRequestError(op operation, req map[string]any, form *multipart.Form) string {
	missing := func(p string) string {
		return errorBody("invalid_request_error", "", fmt.Sprintf("Missing required parameter: '%s'.", p), p)
	}
	switch op.kind {
	case "images":
		if form != nil {
			if _, _, ok := formFile(form, "image"); !ok {
				return missing("image")
			}
			if first(form.Value["prompt"]) == "" {
				return missing("prompt")
			}
			return ""
		}
		if p, _ := req["prompt"].(string); p == "" {
			return missing("prompt")
		}
	case "transcriptions", "translations":
		if _, _, ok := formFile(form, "file"); !ok {
			return missing("file")
		}
	case "speech":
		if in, _ := req["input"].(string); in == "" {
			return missing("input")
		}
		if v, _ := req["voice"].(string); v == "" {
			return missing("voice")
		}
	}
	return ""
}

// serveMedia answers an images or audio request that passed the limits.
func (s *Simulator) serveMedia(w http.ResponseWriter, r *http.Request, d *deployment, op operation, req map[string]any, form *multipart.Form, prompt int) {
	if !sleep(r.Context(), d.cfg.TimeToFirstToken.d()) {
		return
	}
	field := func(name string) string {
		if form != nil {
			return first(form.Value[name])
		}
		v, _ := req[name].(string)
		return v
	}
	switch op.kind {
	case "images":
		n := 1
		if form != nil {
			if v, err := strconv.Atoi(first(form.Value["n"])); err == nil && v > 0 {
				n = v
			}
		} else if v, ok := req["n"].(float64); ok && v > 0 {
			n = int(v)
		}
		var data []any
		for i := 0; i < min(n, 10); i++ {
			img := map[string]any{"b64_json": onePixelPNG}
			if field("response_format") == "url" {
				img = map[string]any{"url": fmt.Sprintf("https://simulated.blob.core.windows.net/images/%s/generated_%02d.png", newID(), i)}
			}
			if strings.HasPrefix(strings.ToLower(d.cfg.Model), "dall-e") {
				img["revised_prompt"] = field("prompt")
			}
			data = append(data, img)
		}
		body := map[string]any{"created": time.Now().Unix(), "data": data}
		if !strings.HasPrefix(strings.ToLower(d.cfg.Model), "dall-e") {
			body["usage"] = map[string]any{"input_tokens": prompt, "output_tokens": 272 * len(data), "total_tokens": prompt + 272*len(data),
				"input_tokens_details": map[string]any{"text_tokens": prompt, "image_tokens": 0}}
		}
		writeObject(w, http.StatusOK, body)
	case "transcriptions", "translations":
		name, content, _ := formFile(form, "file")
		sum := sha256.Sum256(content)
		verb, task := "Transcribed", "transcribe"
		if op.kind == "translations" {
			verb, task = "Translated", "translate"
		}
		text := fmt.Sprintf("%s %s (%d bytes, sha256 %s): %s", verb, name, len(content), hex.EncodeToString(sum[:8]), strings.TrimSpace((&answer{completion: d.cfg.CompletionTokens}).text()))
		switch field("response_format") {
		case "text", "srt", "vtt":
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusOK)
			_, _ = fmt.Fprintln(w, text)
		case "verbose_json":
			writeObject(w, http.StatusOK, map[string]any{"task": task, "language": "english",
				"duration": float64(len(content)) / 32000, "text": text, "segments": []any{}})
		default:
			writeObject(w, http.StatusOK, map[string]any{"text": text})
		}
	case "speech":
		format := field("response_format")
		ct := map[string]string{"": "audio/mpeg", "mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "flac": "audio/flac", "wav": "audio/wav", "pcm": "audio/pcm"}[format]
		if ct == "" {
			writeJSON(w, http.StatusBadRequest, errorBody("invalid_request_error", "", fmt.Sprintf("Invalid value for 'response_format': '%s'.", format), "response_format"))
			return
		}
		audio := speechBytes(field("input"))
		w.Header().Set("Content-Type", ct)
		w.Header().Set("Content-Length", strconv.Itoa(len(audio)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(audio)
	}
	s.count(d, func(st *Stats) { st.Served++; st.PromptTokens += prompt })
}

// speechBytes is the "audio" for a text: an ID3 header and bytes derived from the text, 64
// per character, so that the same input always sounds the same.
func speechBytes(input string) []byte {
	out := []byte("ID3\x04\x00\x00\x00\x00\x00\x00")
	seed := sha256.Sum256([]byte(input))
	for len(out) < 1024+64*len(input) {
		seed = sha256.Sum256(seed[:])
		out = append(out, seed[:]...)
	}
	return out
}
