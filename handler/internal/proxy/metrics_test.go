package proxy

import (
	"context"
	"net/http"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// points flattens what the reader collected: metric name -> its data points' attributes and values.
type dataPoint struct {
	attrs attribute.Set
	count uint64 // histograms
	sum   float64
}

func collect(t *testing.T, r *sdkmetric.ManualReader) map[string][]dataPoint {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string][]dataPoint{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					out[m.Name] = append(out[m.Name], dataPoint{p.Attributes, p.Count, p.Sum})
				}
			case metricdata.Histogram[int64]:
				for _, p := range d.DataPoints {
					out[m.Name] = append(out[m.Name], dataPoint{p.Attributes, p.Count, float64(p.Sum)})
				}
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					out[m.Name] = append(out[m.Name], dataPoint{p.Attributes, 0, float64(p.Value)})
				}
			}
		}
	}
	return out
}

func attrOf(s attribute.Set, key string) string {
	v, _ := s.Value(attribute.Key(key))
	return v.Emit()
}

// find returns the points of a metric whose attributes include all of want.
func find(points []dataPoint, want ...string) []dataPoint {
	var out []dataPoint
	for _, p := range points {
		ok := true
		for i := 0; i+1 < len(want); i += 2 {
			ok = ok && attrOf(p.attrs, want[i]) == want[i+1]
		}
		if ok {
			out = append(out, p)
		}
	}
	return out
}

func TestMetrics(t *testing.T) {
	throttled := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(429)
	})
	healthy := newBackend(t, jsonAnswer(200, okBody))
	tg := newGateway(t, nil, throttled, healthy)
	reader := sdkmetric.NewManualReader()
	tg.gw.metrics = newInstruments(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test"), nil)

	if resp, body := tg.post(t, chatPath, `{}`, "x-test", "1"); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	tg.settle()
	m := collect(t, reader)
	common := []string{"gen_ai.provider.name", "azure.ai.openai", "gen_ai.operation.name", "chat", "gen_ai.request.model", "chat"}

	if p := find(m["gateway.throttle.events"], append(common, "gateway.target", "a1/d1")...); len(p) != 1 || p[0].sum != 1 {
		t.Errorf("throttle events %+v", m["gateway.throttle.events"])
	}
	if p := find(m["gateway.failovers"], append(common, "gateway.target", "a1/d1", "gateway.reason", "throttled")...); len(p) != 1 || p[0].sum != 1 {
		t.Errorf("failovers %+v", m["gateway.failovers"])
	}
	if p := find(m["gen_ai.client.operation.duration"], "gateway.target", "a1/d1", "error.type", "429"); len(p) != 1 || p[0].count != 1 {
		t.Errorf("failed attempt duration %+v", m["gen_ai.client.operation.duration"])
	}
	if p := find(m["gen_ai.client.operation.duration"], "gateway.target", "a2/d2", "error.type", "", "server.address", "127.0.0.1"); len(p) != 1 || p[0].count != 1 {
		t.Errorf("served attempt duration %+v", m["gen_ai.client.operation.duration"])
	}
	if p := find(m["gen_ai.server.request.duration"], append(common, "gateway.target", "a2/d2", "http.response.status_code", "200", "gateway.app", "none")...); len(p) != 1 || p[0].count != 1 || p[0].sum <= 0 {
		t.Errorf("request duration %+v", m["gen_ai.server.request.duration"])
	}
	in := find(m["gen_ai.client.token.usage"], append(common, "gateway.target", "a2/d2", "gen_ai.token.type", "input")...)
	out := find(m["gen_ai.client.token.usage"], append(common, "gateway.target", "a2/d2", "gen_ai.token.type", "output")...)
	if len(in) != 1 || in[0].sum != 3 || len(out) != 1 || out[0].sum != 1 {
		t.Errorf("token usage %+v (the body said 3 in, 1 out)", m["gen_ai.client.token.usage"])
	}
	if len(m["gen_ai.server.time_to_first_token"]) != 0 {
		t.Errorf("time to first token recorded for a non-streaming request")
	}

	// A stream: time to first token and per output token; the throttled target is skipped now.
	healthy.set(sseAnswer(
		"data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
		"data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n",
		"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":2,\"total_tokens\":4}}\n\n",
		"data: [DONE]\n\n"))
	if resp, body := tg.post(t, chatPath, `{"stream":true}`); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	tg.settle()
	m = collect(t, reader)
	if p := find(m["gen_ai.server.time_to_first_token"], common...); len(p) != 1 || p[0].count != 1 {
		t.Errorf("time to first token %+v", m["gen_ai.server.time_to_first_token"])
	}
	if p := find(m["gen_ai.server.time_per_output_token"], common...); len(p) != 1 || p[0].count != 1 {
		t.Errorf("time per output token %+v", m["gen_ai.server.time_per_output_token"])
	}
	if p := find(m["gateway.throttle.events"]); len(p) != 1 || p[0].sum != 1 {
		t.Errorf("the skipped target counted as throttled again: %+v", p)
	}
	if in := find(m["gen_ai.client.token.usage"], "gen_ai.token.type", "input"); len(in) != 1 || in[0].sum != 5 || in[0].count != 2 {
		t.Errorf("input tokens %+v, want 3+2 over two requests", in)
	}
}

// With no meter, recording builds nothing (the hot path pays nothing for metrics it won't send).
func TestMetricsOffAllocateNothing(t *testing.T) {
	in := newInstruments(nil, nil)
	c := &call{log: requestLog{path: "/openai/deployments/chat/chat/completions", logical: "chat", attempts: []*attempt{{}}}}
	if n := testing.AllocsPerRun(100, func() { in.record(context.Background(), c, 1) }); n != 0 {
		t.Errorf("%v allocations per request with metrics off", n)
	}
}
