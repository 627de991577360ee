package proxy

import (
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// operationName follows the GenAI semantic conventions' gen_ai.operation.name.
func operationName(path string) string {
	switch {
	case strings.HasSuffix(path, "/chat/completions"):
		return "chat"
	case strings.HasSuffix(path, "/completions"):
		return "text_completion"
	case strings.HasSuffix(path, "/embeddings"):
		return "embeddings"
	case strings.HasSuffix(path, "/responses"):
		return "responses"
	}
	return "request"
}

// endRequestSpan names the request's span "{operation} {logical deployment}" as the GenAI
// conventions do, records what the request log records (never a body or credential), and ends it.
func endRequestSpan(c *call) {
	if !c.span.IsRecording() { // no tracing configured: build nothing
		c.span.End()
		return
	}
	l := &c.log
	op := operationName(l.path)
	c.span.SetName(op + " " + l.logical)
	attrs := []attribute.KeyValue{
		attribute.String("gen_ai.provider.name", providerName),
		attribute.String("gen_ai.operation.name", op),
		attribute.String("gen_ai.request.model", l.logical),
		attribute.Int("http.response.status_code", l.status),
		attribute.String("gateway.served_by", orNone(l.servedBy)),
		attribute.Int("gateway.attempts", len(l.attempts)),
		attribute.String("gateway.app", orNone(l.app)),
		attribute.Bool("gateway.stream", l.stream),
	}
	if l.usage != nil {
		attrs = append(attrs, attribute.Int("gen_ai.usage.input_tokens", l.usage.Prompt), attribute.Int("gen_ai.usage.output_tokens", l.usage.Completion))
	}
	if l.firstToken > 0 {
		attrs = append(attrs, attribute.Float64("gateway.time_to_first_token_ms", float64(l.firstToken.Microseconds())/1000))
	}
	c.span.SetAttributes(attrs...)
	if l.status >= 500 || l.broken != "" {
		c.span.SetStatus(codes.Error, l.broken)
	}
	c.span.End()
}

// endAttemptSpan records one attempt's target and outcome and ends its span.
func endAttemptSpan(span trace.Span, a *attempt) {
	if !span.IsRecording() {
		span.End()
		return
	}
	span.SetAttributes(
		attribute.String("gateway.target", a.target.ID),
		attribute.String("server.address", a.target.Host),
		attribute.String("gen_ai.request.model", a.target.Deployment),
		attribute.Int("http.response.status_code", a.status),
		attribute.String("gateway.outcome", outcomeName(a)),
	)
	if a.resp == nil && a.reason != "" {
		span.SetStatus(codes.Error, a.reason)
	}
	span.End()
}
