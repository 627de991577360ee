package e2e

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/aoai-failover/gateway/tests/aoaisim"
)

// otlpReceiver takes OTLP/HTTP trace exports (protobuf), as a collector or Azure Monitor's
// OTLP endpoint does.
type otlpReceiver struct {
	mu    sync.Mutex
	spans []*tracepb.Span
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var req coltracepb.ExportTraceServiceRequest
	if r.URL.Path != "/v1/traces" || proto.Unmarshal(b, &req) != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			o.spans = append(o.spans, ss.Spans...)
		}
	}
	o.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	b, _ = proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Write(b)
}

func (o *otlpReceiver) byName() map[string]*tracepb.Span {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[string]*tracepb.Span{}
	for _, s := range o.spans {
		out[s.Name] = s
	}
	return out
}

func attr(s *tracepb.Span, key string) string {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			if v := kv.Value.GetStringValue(); v != "" {
				return v
			}
			return kv.Value.String()
		}
	}
	return ""
}

// TestTracesOverOTLP: with the standard OTEL_EXPORTER_OTLP_ENDPOINT set, each request is a
// span named by the GenAI conventions with one child span per attempt.
func TestTracesOverOTLP(t *testing.T) {
	rcv := &otlpReceiver{}
	collector := httptest.NewServer(rcv)
	defer collector.Close()
	swc := startRegion(t, "swc", map[string]aoaisim.Deployment{"micro": {Model: "m", Fault: "503"}})
	frc := startRegion(t, "frc", map[string]aoaisim.Deployment{"big": {Model: "m"}})
	regions := map[string]*region{"swc": swc, "frc": frc}
	doc := newRouting().account("swc", swc).account("frc", frc).target("chat", "swc", "micro", 1).target("chat", "frc", "big", 2)
	env := doc.env(regions)
	env["OTEL_EXPORTER_OTLP_ENDPOINT"] = collector.URL
	env["OTEL_BSP_SCHEDULE_DELAY"] = "100"
	gw := startGateway(t, env, doc.secrets(regions)...)

	if resp, text := chat(t, gw.URL, "chat", smallChat); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, text)
	}
	waitFor(t, "spans exported", 10*time.Second, func() bool { return len(rcv.byName()) >= 3 })
	spans := rcv.byName()
	req, a1, a2 := spans["chat chat"], spans["attempt swc/micro"], spans["attempt frc/big"]
	if req == nil || a1 == nil || a2 == nil {
		t.Fatalf("spans %v", spans)
	}
	if string(a1.ParentSpanId) != string(req.SpanId) || string(a2.ParentSpanId) != string(req.SpanId) || string(a1.TraceId) != string(req.TraceId) {
		t.Errorf("attempt spans are not children of the request span")
	}
	if req.Kind != tracepb.Span_SPAN_KIND_SERVER || a1.Kind != tracepb.Span_SPAN_KIND_CLIENT {
		t.Errorf("kinds %v %v", req.Kind, a1.Kind)
	}
	if attr(req, "gateway.served_by") != "frc/big" || attr(req, "gen_ai.operation.name") != "chat" || attr(req, "gen_ai.usage.input_tokens") == "" {
		t.Errorf("request span attributes %v", req.Attributes)
	}
	if attr(a1, "gateway.outcome") != "failed" || a1.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR || attr(a2, "gateway.outcome") != "served" {
		t.Errorf("attempt spans %v / %v", a1.Attributes, a2.Attributes)
	}
}
