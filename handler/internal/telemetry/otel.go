package telemetry

import (
	"context"
	"errors"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Signals reads which signals the standard OTEL_* settings ask for, and the service name. The
// exporters read the rest of the OTEL_EXPORTER_OTLP_* settings themselves.
func Signals(getenv func(string) string) (traces, metrics bool, service string) {
	all := getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != ""
	traces = getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" || all
	metrics = getenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") != "" || all
	service = getenv("OTEL_SERVICE_NAME")
	if service == "" {
		service = "aoai-gateway"
	}
	return traces, metrics, service
}

// OTel is the process's OpenTelemetry: a tracer (nil when traces are off), a meter (nil when
// metrics are off) and the function that flushes and stops both.
type OTel struct {
	Tracer   trace.Tracer
	Meter    metric.Meter
	Shutdown func(context.Context) error
}

// OpenTelemetry sets up traces and metrics from the standard settings. With
// OTEL_EXPORTER_OTLP_ENDPOINT (or the signal's own _TRACES_/_METRICS_ENDPOINT) set, spans are
// batched and metrics read periodically (OTEL_METRIC_EXPORT_INTERVAL, default 60 s) and both
// exported over OTLP/HTTP, configured by the standard OTEL_* settings; without, nothing is
// recorded and nothing is paid for.
func OpenTelemetry(ctx context.Context, getenv func(string) string, instance string) (OTel, error) {
	o := OTel{Shutdown: func(context.Context) error { return nil }}
	traces, metrics, name := Signals(getenv)
	if !traces && !metrics {
		return o, nil
	}
	res := resource.NewSchemaless(attribute.String("service.name", name), attribute.String("service.instance.id", instance))
	var stops []func(context.Context) error
	if traces {
		exp, err := otlptracehttp.New(ctx)
		if err != nil {
			return o, fmt.Errorf("OTLP trace exporter: %w", err)
		}
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
		o.Tracer = tp.Tracer("github.com/aoai-failover/gateway")
		stops = append(stops, tp.Shutdown)
	}
	if metrics {
		exp, err := otlpmetrichttp.New(ctx)
		if err != nil {
			return o, fmt.Errorf("OTLP metric exporter: %w", err)
		}
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp)), sdkmetric.WithResource(res))
		o.Meter = mp.Meter("github.com/aoai-failover/gateway")
		stops = append(stops, mp.Shutdown)
	}
	o.Shutdown = func(ctx context.Context) error {
		var errs []error
		for _, stop := range stops {
			errs = append(errs, stop(ctx))
		}
		return errors.Join(errs...)
	}
	return o, nil
}
