package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sort"

	"github.com/aoai-failover/gateway/handler/internal/config"
	"github.com/aoai-failover/gateway/handler/internal/telemetry"
)

// CheckReport is what `handler -check` prints: whether the settings would start the gateway,
// and which settings it read, so a deployment template can be checked against the code.
type CheckReport struct {
	OK          bool     `json:"ok"`
	Problems    []string `json:"problems,omitempty"`
	Warnings    []string `json:"warnings,omitempty"`
	Deployments []string `json:"deployments,omitempty"`
	// HealthPath is the path for a load balancer's health probe.
	HealthPath string `json:"healthPath"`
	// Read names every setting the gateway looks up with these settings (set or not).
	Read []string `json:"read"`
}

// Check validates the settings from getenv as a start would, contacting nothing, and writes a
// CheckReport as JSON to w. It returns an error when the gateway would refuse to start. It runs
// the start's own preparation (prepare: the settings, the routing document, every client built
// from them), so its problems are the very messages a start with these settings stops with.
func Check(getenv func(string) string, w io.Writer) error {
	read := map[string]bool{}
	recording := func(name string) string {
		read[name] = true
		return getenv(name)
	}
	report := CheckReport{HealthPath: HealthPath}
	p, err := prepare(context.Background(), recording, slog.New(slog.DiscardHandler))
	telemetry.Signals(recording)
	switch probs := err.(type) {
	case nil:
		p.discard()
		settings := p.settings
		report.OK = true
		report.Warnings = settings.Warnings
		for name := range settings.Routing.Deployments {
			report.Deployments = append(report.Deployments, name)
		}
		sort.Strings(report.Deployments)
	case config.Problems:
		report.Problems = probs
	default:
		report.Problems = []string{err.Error()}
	}
	for name := range read {
		report.Read = append(report.Read, name)
	}
	sort.Strings(report.Read)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(report); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if !report.OK {
		if len(report.Problems) == 1 {
			return fmt.Errorf("the settings would not start the gateway (1 problem)")
		}
		return fmt.Errorf("the settings would not start the gateway (%d problems)", len(report.Problems))
	}
	return nil
}
