package proxy

import (
	"bytes"
	"mime"
	"strings"
)

// formBoundary is the boundary of a multipart/form-data content type, or "".
func formBoundary(contentType string) string {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "multipart/form-data" {
		return ""
	}
	return params["boundary"]
}

// scanForm finds the "model" field of a multipart/form-data body (how the images and audio
// operations name the deployment) without parsing the rest: the value's byte span, so that it
// can be rewritten and every other byte (a 25 MB audio file) sent as it came. ok is false when
// the body has no such field or is not framed by the boundary.
func scanForm(body []byte, boundary string) (info bodyInfo, ok bool) {
	info = bodyInfo{modelStart: -1, modelEnd: -1}
	if boundary == "" {
		return info, false
	}
	delim := []byte("--" + boundary)
	// The first delimiter may open the body; every later one follows a CRLF.
	i := bytes.Index(body, delim)
	if i < 0 || (i > 0 && !bytes.Equal(body[i-2:i], []byte("\r\n"))) {
		return info, false
	}
	next := append([]byte("\r\n"), delim...)
	for {
		i += len(delim)
		if bytes.HasPrefix(body[i:], []byte("--")) {
			return info, info.hasModel // the closing delimiter
		}
		if !bytes.HasPrefix(body[i:], []byte("\r\n")) {
			return info, false
		}
		i += 2
		headEnd := bytes.Index(body[i:], []byte("\r\n\r\n"))
		if headEnd < 0 {
			return info, false
		}
		head := body[i : i+headEnd]
		valStart := i + headEnd + 4
		end := bytes.Index(body[valStart:], next)
		if end < 0 {
			return info, false
		}
		valEnd := valStart + end
		if name, file := partName(head); name == "model" && !file && !info.hasModel {
			info.model, info.modelStart, info.modelEnd, info.hasModel, info.formModel = string(body[valStart:valEnd]), valStart, valEnd, true, true
		}
		i = valEnd + 2 // at the next delimiter
	}
}

// partName reads a part's Content-Disposition: its field name, and whether it is a file.
func partName(head []byte) (name string, file bool) {
	for _, line := range strings.Split(string(head), "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), "Content-Disposition") {
			continue
		}
		_, params, err := mime.ParseMediaType(strings.TrimSpace(v))
		if err != nil {
			return "", false
		}
		_, file = params["filename"]
		return params["name"], file
	}
	return "", false
}
