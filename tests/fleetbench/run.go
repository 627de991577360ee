package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/aoai-failover/gateway/tests/azurite"
)

// sender sends request i of the trace and says what its caller got.
type sender = func(context.Context, int, call) outcome

// realRun replays the trace against fresh regions through what setup builds in front of them.
func realRun(ctx context.Context, trace []call, specs []regionSpec, window time.Duration, lat simLatency, drain time.Duration,
	setup func([]*region, *http.Client) (sender, func(), error)) (runResult, error) {
	regions, err := startRegions(specs, window, lat)
	if err != nil {
		return runResult{}, err
	}
	defer closeRegions(regions)
	client := newClient()
	defer client.CloseIdleConnections()
	send, cleanup, err := setup(regions, client)
	if err != nil {
		return runResult{}, err
	}
	defer cleanup()
	start := time.Now()
	for _, r := range regions {
		if err := r.arm(start); err != nil {
			return runResult{}, err
		}
	}
	outcomes, lag := drive(ctx, trace, start, drain, send)
	res := runResult{outcomes: outcomes, lag: lag}
	for _, r := range regions {
		res.hits = append(res.hits, r.log())
	}
	return res, ctx.Err()
}

// startFleet starts n gateways for the regions; with shared, they share state in a new table of
// Azurite. The returned function stops them.
func startFleet(ctx context.Context, bin string, client *http.Client, regions []*region, sets []setting, scale float64, n int, shared bool,
	az *azurite.Table, table string, log func(string, ...any)) (sender, func(), error) {
	env, err := gatewayEnv(regions, sets, scale)
	if err != nil {
		return nil, nil, err
	}
	if shared {
		env["GATEWAY_STATE_STORAGE"] = az.ConnectionString
		env["GATEWAY_STATE_TABLE"] = table
	}
	var gws []*gatewayProc
	stopAll := func() {
		for _, g := range gws {
			if err := g.stop(); err != nil {
				log("warning: %v", err)
			}
		}
	}
	for range n {
		g, err := startGateway(ctx, bin, env)
		if err != nil {
			stopAll()
			return nil, nil, err
		}
		gws = append(gws, g)
	}
	if shared {
		// The table created and read once by every instance before traffic starts.
		refresh := time.Second
		if d, err := time.ParseDuration(env["GATEWAY_STATE_REFRESH"]); err == nil {
			refresh = d
		}
		time.Sleep(2*refresh + 200*time.Millisecond)
	}
	return gatewaySend(client, gws), stopAll, nil
}

const whyWait = "admission wait (gateway-wait only)"

func withoutWait(sets []setting) []setting {
	var out []setting
	for _, s := range sets {
		if s.why != whyWait {
			out = append(out, s)
		}
	}
	return out
}

// gatewaySettings decides the gateway settings of the runs: the time settings scaled, -set's,
// and the admission wait if the gateway has one. Each is tried alone with `handler -check`, so a
// setting the gateway does not have is reported, not fatal; all usable ones together must pass.
// It returns them (status says why one is not used) and a Markdown account of them.
func gatewaySettings(o options, bin string, specs []regionSpec) ([]setting, string, error) {
	probe := make([]*region, len(specs))
	for i, sp := range specs {
		probe[i] = &region{spec: sp, key: "probe", url: "http://127.0.0.1:9"}
	}
	try := func(s setting) string {
		env, err := gatewayEnv(probe, []setting{s}, o.scale)
		if err != nil {
			return err.Error()
		}
		rep, err := check(bin, env)
		if err != nil {
			return err.Error()
		}
		if !rep.OK {
			return strings.Join(rep.Problems, "; ")
		}
		if name, ok := strings.CutPrefix(s.path, "env:"); ok && !contains(rep.Read, name) {
			return "the gateway does not read " + name
		}
		return ""
	}
	all := append(append([]setting(nil), timeSettings...), o.sets...)
	fields, derr := discoverSettings(o.repo)
	waitPath := o.waitPath
	if waitPath == "" && derr == nil {
		if c := admissionWaitPath(fields); len(c) > 0 {
			waitPath = c[0]
		}
	}
	if waitPath != "" {
		all = append(all, setting{path: waitPath, real: o.gwWait, why: whyWait})
	}
	for i := range all {
		all[i].status = try(all[i])
	}
	var usable []setting
	for _, s := range all {
		if s.status == "" {
			usable = append(usable, s)
		}
	}
	env, err := gatewayEnv(probe, usable, o.scale)
	if err != nil {
		return nil, "", err
	}
	if rep, err := check(bin, env); err != nil || !rep.OK {
		return nil, "", fmt.Errorf("the gateway refuses the settings together: %v %v", err, rep.Problems)
	}

	var b strings.Builder
	fprintf(&b, "Gateway settings with a time the scaling touches (real time -> this run):\n\n")
	for _, s := range all {
		val := fmt.Sprint(s.value(o.scale))
		if s.raw == nil {
			val = fmt.Sprintf("%s -> %s", s.real, s.value(o.scale))
		}
		state := "set"
		if s.status != "" {
			state = "NOT SET: " + s.status
		}
		fprintf(&b, "- `%s` %s (%s): %s\n", s.path, val, s.why, state)
	}
	if waitPath == "" {
		fprintf(&b, "- admission wait: no setting found in handler/internal/config (a duration field named *wait*); gateway-wait is not run\n")
	}
	if derr != nil {
		fprintf(&b, "- could not read handler/internal/config: %v\n", derr)
	} else if u := unknownDurations(fields, all, waitPath); len(u) > 0 {
		fprintf(&b, "- duration settings fleetbench does not know, NOT scaled (pass -set PATH=<real-time value>): %s\n", strings.Join(u, ", "))
	}
	b.WriteString("- time constants in the gateway's code are not scaled: `go run ./tests/fleetbench -constants` lists them\n")
	return all, b.String(), nil
}
