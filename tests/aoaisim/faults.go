package aoaisim

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// fault is an injected misbehaviour. Faults are set per deployment (Config or SetFault) or per
// request with the x-sim-fault header.
type fault struct {
	kind            string        // "", 408, 500, 503, reset, hang, slow-first-token, cut, stall, malformed
	firstTokenDelay time.Duration // slow-first-token
}

// FaultNames lists the faults the simulator can inject.
var FaultNames = []string{"408", "500", "503", "reset", "hang", "slow-first-token:<duration>", "cut", "stall", "malformed"}

func parseFault(s string) (fault, error) {
	s = strings.TrimSpace(s)
	switch s {
	case "", "408", "500", "503", "reset", "hang", "cut", "stall", "malformed":
		return fault{kind: s}, nil
	}
	if d, ok := strings.CutPrefix(s, "slow-first-token:"); ok {
		v, err := time.ParseDuration(d)
		if err == nil && v >= 0 {
			return fault{kind: "slow-first-token", firstTokenDelay: v}, nil
		}
	}
	return fault{}, fmt.Errorf("unknown fault %q (known: %s)", s, strings.Join(FaultNames, ", "))
}

var faultBodies = map[string]string{
	"408": `{"error":{"code":"Timeout","message":"The operation was timeout."}}`,
	"500": `{"error":{"code":"InternalServerError","message":"The server had an error while processing your request. Sorry about that!"}}`,
	"503": `{"error":{"code":"ServiceUnavailable","message":"The service is temporarily unable to process your request. Please try again later."}}`,
}

// immediate applies a fault that replaces the answer, reporting whether it did.
func (f fault) immediate(w http.ResponseWriter, r *http.Request) bool {
	switch f.kind {
	case "408", "500", "503":
		code, _ := strconv.Atoi(f.kind)
		writeJSON(w, code, faultBodies[f.kind])
		return true
	case "reset":
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			panic(http.ErrAbortHandler)
		}
		if tcp, ok := conn.(*net.TCPConn); ok {
			_ = tcp.SetLinger(0) // RST rather than FIN, like a dropped connection
		}
		conn.Close()
		return true
	case "hang":
		<-r.Context().Done()
		return true
	}
	return false
}
