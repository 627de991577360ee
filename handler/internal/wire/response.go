package wire

import (
	"net/http"
	"strconv"
)

// statusLines are "429 Too Many Requests" and the like, made once: a throttled region answers
// hundreds of 429s a second, and the gateway its own.
var statusLines = func() (lines [600]string) {
	for code := range lines {
		if text := http.StatusText(code); text != "" {
			lines[code] = strconv.Itoa(code) + " " + text
		}
	}
	return lines
}()

// StatusLine is the status code and its reason phrase, "200 OK" for 200; a code without one
// gets "status code N".
func StatusLine(code int) string {
	if code >= 0 && code < len(statusLines) && statusLines[code] != "" {
		return statusLines[code]
	}
	return strconv.Itoa(code) + " status code " + strconv.Itoa(code)
}
