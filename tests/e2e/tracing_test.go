package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	metricpb "go.opentelemetry.io/proto/otlp/metrics/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/aoai-failover/gateway/tests/aoaisim"
)

// otlpReceiver takes OTLP/HTTP trace and metric exports (protobuf), as a collector or Azure
// Monitor's OTLP endpoint does.
type otlpReceiver struct {
	mu      sync.Mutex
	spans   []*tracepb.Span
	metrics map[string]*metricpb.Metric // the latest export of each metric (cumulative)
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var resp proto.Message
	switch r.URL.Path {
	case "/v1/traces":
		var req coltracepb.ExportTraceServiceRequest
		if proto.Unmarshal(b, &req) != nil {
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
		resp = &coltracepb.ExportTraceServiceResponse{}
	case "/v1/metrics":
		var req colmetricpb.ExportMetricsServiceRequest
		if proto.Unmarshal(b, &req) != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		o.mu.Lock()
		if o.metrics == nil {
			o.metrics = map[string]*metricpb.Metric{}
		}
		for _, rm := range req.ResourceMetrics {
			for _, sm := range rm.ScopeMetrics {
				for _, m := range sm.Metrics {
					o.metrics[m.Name] = m
				}
			}
		}
		o.mu.Unlock()
		resp = &colmetricpb.ExportMetricsServiceResponse{}
	default:
		w.WriteHeader(http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	b, _ = proto.Marshal(resp)
	w.Write(b)
}

func (o *otlpReceiver) metric(name string) *metricpb.Metric {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.metrics[name]
}

// histogramSum adds up a histogram's points whose attributes include key=value.
func histogramSum(m *metricpb.Metric, key, value string) (count uint64, sum float64) {
	for _, p := range m.GetHistogram().GetDataPoints() {
		for _, kv := range p.Attributes {
			if kv.Key == key && kv.Value.GetStringValue() == value {
				count += p.Count
				sum += p.GetSum()
			}
		}
	}
	return count, sum
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

// TestTelemetryOverOTLP: with the standard OTEL_EXPORTER_OTLP_ENDPOINT set, each request is a
// span named by the GenAI conventions with one child span per attempt, and the GenAI and
// failover metrics are exported.
func TestTelemetryOverOTLP(t *testing.T) {
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
	env["OTEL_METRIC_EXPORT_INTERVAL"] = "200"
	gw := startGateway(t, env, doc.secrets(regions)...)

	resp, text := chat(t, gw.URL, "chat", smallChat)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, text)
	}
	var answer struct {
		Usage struct {
			Prompt     float64 `json:"prompt_tokens"`
			Completion float64 `json:"completion_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal([]byte(text), &answer); err != nil || answer.Usage.Prompt == 0 {
		t.Fatalf("answer %s: %v", text, err)
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

	names := []string{"gen_ai.server.request.duration", "gen_ai.client.operation.duration", "gen_ai.client.token.usage", "gateway.failovers"}
	waitFor(t, "metrics exported", 10*time.Second, func() bool {
		for _, n := range names {
			if rcv.metric(n) == nil {
				return false
			}
		}
		return true
	})
	if n, _ := histogramSum(rcv.metric("gen_ai.server.request.duration"), "gateway.target", "frc/big"); n != 1 {
		t.Errorf("request duration: %d points served by frc/big", n)
	}
	if n, _ := histogramSum(rcv.metric("gen_ai.client.operation.duration"), "error.type", "503"); n != 1 {
		t.Errorf("attempt duration: %d failed attempts with error.type 503", n)
	}
	if _, in := histogramSum(rcv.metric("gen_ai.client.token.usage"), "gen_ai.token.type", "input"); in != answer.Usage.Prompt {
		t.Errorf("input tokens %v, the answer said %v", in, answer.Usage.Prompt)
	}
	if _, out := histogramSum(rcv.metric("gen_ai.client.token.usage"), "gen_ai.token.type", "output"); out != answer.Usage.Completion {
		t.Errorf("output tokens %v, the answer said %v", out, answer.Usage.Completion)
	}
	fo := rcv.metric("gateway.failovers").GetSum().GetDataPoints()
	if len(fo) != 1 || fo[0].GetAsInt() != 1 {
		t.Errorf("failovers %v", fo)
	}
}
