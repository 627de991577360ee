package proxy

import (
	"context"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/aoai-failover/gateway/handler/internal/budget"
)

// providerName is gen_ai.provider.name for Azure OpenAI in the GenAI semantic conventions.
const providerName = "azure.ai.openai"

// instruments are the gateway's metrics. Names, units and buckets follow the OpenTelemetry GenAI
// semantic conventions where one fits: the gateway is a GenAI server to its callers
// (gen_ai.server.*) and a GenAI client of each target (gen_ai.client.*). Failovers and throttle
// events have no convention and are named gateway.*. Every attribute comes from the
// configuration (logical names, targets, app names), so cardinality is bounded by it.
type instruments struct {
	on             bool // false: skip building attributes for a no-op meter
	requestDur     metric.Float64Histogram
	firstToken     metric.Float64Histogram
	perOutputToken metric.Float64Histogram
	attemptDur     metric.Float64Histogram
	tokens         metric.Int64Histogram
	failovers      metric.Int64Counter
	throttled      metric.Int64Counter
	appTokens      metric.Int64Counter
	budgetRefused  metric.Int64Counter
}

// budgetStatus is implemented by budgets that report every app's consumption (budget.Budgets):
// the metrics observe it.
type budgetStatus interface {
	Status(now time.Time) []budget.AppStatus
}

var (
	durationBuckets = []float64{0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92}
	ttftBuckets     = []float64{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0}
	perTokenBuckets = []float64{0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5}
	tokenBuckets    = []float64{1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864}
)

func newInstruments(m metric.Meter, budgets Budgets) *instruments {
	in := &instruments{on: m != nil}
	if m == nil {
		m = noop.NewMeterProvider().Meter("gateway")
	}
	// The SDK returns a working no-op instrument alongside any error, so errors are not fatal.
	in.requestDur, _ = m.Float64Histogram("gen_ai.server.request.duration", metric.WithUnit("s"),
		metric.WithDescription("Time from a caller's request to the last byte of the gateway's answer, all attempts included."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	in.firstToken, _ = m.Float64Histogram("gen_ai.server.time_to_first_token", metric.WithUnit("s"),
		metric.WithDescription("Time from a caller's request to the first content token relayed to it (streams)."),
		metric.WithExplicitBucketBoundaries(ttftBuckets...))
	in.perOutputToken, _ = m.Float64Histogram("gen_ai.server.time_per_output_token", metric.WithUnit("s"),
		metric.WithDescription("Time per output token after the first, for successful streams."),
		metric.WithExplicitBucketBoundaries(perTokenBuckets...))
	in.attemptDur, _ = m.Float64Histogram("gen_ai.client.operation.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of one attempt against one target."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	in.tokens, _ = m.Int64Histogram("gen_ai.client.token.usage", metric.WithUnit("{token}"),
		metric.WithDescription("Input and output tokens of served requests, as the target reported them."),
		metric.WithExplicitBucketBoundaries(tokenBuckets...))
	in.failovers, _ = m.Int64Counter("gateway.failovers", metric.WithUnit("{failover}"),
		metric.WithDescription("Attempts abandoned for the next target, by the target left and why."))
	in.throttled, _ = m.Int64Counter("gateway.throttle.events", metric.WithUnit("{event}"),
		metric.WithDescription("429 answers from a target."))
	in.appTokens, _ = m.Int64Counter("gateway.app.tokens", metric.WithUnit("{token}"),
		metric.WithDescription("Tokens an app used, by its answers' usage, per logical deployment."))
	in.budgetRefused, _ = m.Int64Counter("gateway.app.budget.refusals", metric.WithUnit("{request}"),
		metric.WithDescription("Requests refused because the app's token budget was used up."))
	if bs, ok := budgets.(budgetStatus); ok && in.on {
		// The fleet's consumption of each app's budget in the current window, as this instance
		// knows it (its own and what the others last published), and what is left.
		used, _ := m.Int64ObservableGauge("gateway.app.budget.used", metric.WithUnit("{token}"),
			metric.WithDescription("Tokens counted against an app's budget in the current window, fleet-wide; gen_ai.request.model is the logical deployment, or \"*\" for the app's overall budget."))
		left, _ := m.Int64ObservableGauge("gateway.app.budget.remaining", metric.WithUnit("{token}"),
			metric.WithDescription("Tokens left of an app's budget in the current window, fleet-wide."))
		_, _ = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
			for _, a := range bs.Status(time.Now()) {
				attrs := func(model string) metric.ObserveOption {
					return metric.WithAttributeSet(attribute.NewSet(attribute.String("gateway.app", a.App), attribute.String("gen_ai.request.model", model)))
				}
				o.ObserveInt64(used, a.FleetUsedTokens, attrs("*"))
				if a.RemainingTokens != nil {
					o.ObserveInt64(left, *a.RemainingTokens, attrs("*"))
				}
				for name, d := range a.Deployments {
					o.ObserveInt64(used, d.FleetUsedTokens, attrs(name))
					if d.RemainingTokens != nil {
						o.ObserveInt64(left, *d.RemainingTokens, attrs(name))
					}
				}
			}
			return nil
		}, used, left)
	}
	return in
}

// record writes one finished request's metrics.
func (in *instruments) record(ctx context.Context, c *call, total float64) {
	if !in.on {
		return
	}
	l := &c.log
	op := operationName(l.path)
	common := []attribute.KeyValue{
		attribute.String("gen_ai.provider.name", providerName),
		attribute.String("gen_ai.operation.name", op),
		attribute.String("gen_ai.request.model", l.logical),
		attribute.String("gateway.app", orNone(l.app)),
	}
	for i, a := range l.attempts {
		attrs := append(common[:4:4],
			attribute.String("gateway.target", a.target.ID),
			attribute.String("server.address", a.target.Host),
		)
		if a.resp == nil {
			attrs = append(attrs, attribute.String("error.type", errorType(a)))
		}
		set := metric.WithAttributeSet(attribute.NewSet(attrs...))
		in.attemptDur.Record(ctx, a.dur.Seconds(), set)
		if a.status == 429 {
			in.throttled.Add(ctx, 1, set)
		}
		if a.resp == nil && i < len(l.attempts)-1 { // another target was tried after this one
			in.failovers.Add(ctx, 1, metric.WithAttributeSet(attribute.NewSet(append(common[:4:4],
				attribute.String("gateway.target", a.target.ID),
				attribute.String("gateway.reason", outcomeName(a)))...)))
		}
	}
	served := append(common[:4:4], attribute.String("gateway.target", orNone(l.servedBy)),
		attribute.Int("http.response.status_code", l.status))
	if l.status >= 400 || l.broken != "" {
		served = append(served, attribute.String("error.type", requestErrorType(l)))
	}
	in.requestDur.Record(ctx, total, metric.WithAttributeSet(attribute.NewSet(served...)))
	if l.firstToken > 0 {
		in.firstToken.Record(ctx, l.firstToken.Seconds(), metric.WithAttributeSet(attribute.NewSet(common...)))
		if u := l.usage; u != nil && u.Completion > 1 && l.broken == "" {
			in.perOutputToken.Record(ctx, (total-l.firstToken.Seconds())/float64(u.Completion-1), metric.WithAttributeSet(attribute.NewSet(common...)))
		}
	}
	if l.budgetRefused {
		in.budgetRefused.Add(ctx, 1, metric.WithAttributeSet(attribute.NewSet(common...)))
	}
	if u := l.usage; u != nil {
		in.appTokens.Add(ctx, int64(u.Total), metric.WithAttributeSet(attribute.NewSet(common...)))
		base := append(common[:4:4], attribute.String("gateway.target", orNone(l.servedBy)))
		in.tokens.Record(ctx, int64(u.Prompt), metric.WithAttributeSet(attribute.NewSet(append(base, attribute.String("gen_ai.token.type", "input"))...)))
		in.tokens.Record(ctx, int64(u.Completion), metric.WithAttributeSet(attribute.NewSet(append(base, attribute.String("gen_ai.token.type", "output"))...)))
	}
}

// errorType names why an attempt was abandoned, for error.type.
func errorType(a *attempt) string {
	if a.timeout {
		return "timeout"
	}
	if a.status > 0 {
		return strconv.Itoa(a.status)
	}
	return outcomeName(a)
}

func requestErrorType(l *requestLog) string {
	if l.broken != "" {
		return "stream_interrupted"
	}
	return strconv.Itoa(l.status)
}
