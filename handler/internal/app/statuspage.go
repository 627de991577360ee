package app

import (
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/aoai-failover/gateway/handler/internal/state"
)

// wantsHTML: a browser asking for the status gets the page; everyone else JSON.
func wantsHTML(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}

type pageTarget struct {
	state.TargetStatus
	Priority, Weight int
	Region           string
	Share            float64 // of this deployment's answers
	Until            int64   // unix ms the throttle, circuit or low budget ends, 0 if none
	Note             string  // what the state means for routing, when it is not plain
}

type pageDeployment struct {
	Name    string
	Targets []pageTarget
}

type pageData struct {
	Instance, Uptime string
	Now              time.Time
	Store            state.StoreHealth
	StoreKind        string
	Deployments      []pageDeployment
}

// statusPage is one self-contained page: inline style and a few lines of script that count the
// deadlines down and reload every 5 s. No external asset, so it works behind any firewall.
var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"pct": func(f float64) string { return fmt.Sprintf("%.0f%%", f*100) },
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Gateway status · {{.Instance}}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1b1f24;background:#f6f8fa}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
.meta{color:#57606a}table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 2px #0002}
th,td{padding:8px 10px;border-bottom:1px solid #eaeef2;text-align:left}th{background:#eef1f4;font-weight:600}
.state{font-weight:600;padding:2px 8px;border-radius:10px;white-space:nowrap}
.available{background:#dafbe1;color:#116329}.throttled{background:#fff8c5;color:#7d4e00}
.failing{background:#ffebe9;color:#a40e26}.probing{background:#ddf4ff;color:#0550ae}
.deprioritised{background:#fbefff;color:#6e40c9}.note{color:#57606a;font-size:12px;margin-top:2px}
.legend{color:#57606a;margin-top:16px;font-size:12px}
.bar{background:#eaeef2;height:8px;border-radius:4px;min-width:80px}.bar i{display:block;height:8px;border-radius:4px;background:#0969da}
.store-ok{color:#116329}.store-bad{color:#a40e26}
</style></head><body>
<h1>Azure OpenAI failover gateway</h1>
<div class="meta">instance {{.Instance}} · up {{.Uptime}} · {{.Now.Format "2006-01-02 15:04:05 UTC"}} ·
state store <b id="store" class="{{if .Store.Healthy}}store-ok{{else}}store-bad{{end}}">{{.StoreKind}}{{if .Store.Shared}} (shared){{end}}: {{if .Store.Healthy}}healthy{{else}}degraded{{end}}</b></div>
{{range .Deployments}}
<h2>{{.Name}}</h2>
<table data-deployment="{{.Name}}"><tr><th>target</th><th>region</th><th>priority</th><th>state</th><th>remaining tokens</th><th>remaining requests</th><th>latency</th><th>traffic share</th><th>last</th></tr>
{{range .Targets}}<tr data-target="{{.Target}}">
<td>{{.Target}}</td><td>{{.Region}}</td><td>{{.Priority}}{{if gt .Weight 1}} (weight {{.Weight}}){{end}}</td>
<td><span class="state {{.State}}" {{if .Until}}data-until="{{.Until}}"{{end}}>{{.State}}</span>{{with .Note}}<div class="note">{{.}}</div>{{end}}</td>
<td>{{with .RemainingTokens}}{{.}}{{else}}–{{end}}</td><td>{{with .RemainingRequests}}{{.}}{{else}}–{{end}}</td>
<td>{{if .LatencyMs}}{{printf "%.0f" .LatencyMs}} ms{{else}}–{{end}}</td>
<td><div class="bar" title="{{pct .Share}}"><i style="width:{{pct .Share}}"></i></div> {{pct .Share}} ({{.Served}})</td>
<td>{{if .LastStatus}}{{.LastStatus}} {{.LastReason}}{{end}}</td></tr>
{{end}}</table>
{{end}}
<p class="legend">available: tried in preference order · deprioritised: by its last reported remaining tokens and
requests and its refill since, it cannot take a typical request now, so requests pass it over until it can · throttled: it answered
429, every request skips it until its wait passes · failing: its circuit is open (or it answered 401, 403 or
404), every request skips it · probing: its cool-down is over, one request at a time tries it</p>
<script>
function tick(){document.querySelectorAll("[data-until]").forEach(function(e){
 var s=Math.max(0,(+e.dataset.until-Date.now())/1000);e.textContent=e.className.split(" ")[1]+" for "+s.toFixed(1)+" s";});}
tick();setInterval(tick,200);setTimeout(function(){location.reload()},5000);
</script>
</body></html>
`))

func (g *gateway) statusHTML(w http.ResponseWriter, now time.Time) {
	byID := g.snapshot(now)
	data := pageData{Instance: g.instance, Uptime: now.Sub(g.started).Round(time.Second).String(), Now: now.UTC(), Store: g.view.Health(), StoreKind: g.store}
	for _, name := range g.planner.Names() {
		d := pageDeployment{Name: name}
		var total int64
		for _, group := range g.planner.Groups(name) {
			for _, t := range group {
				st := byID[t.ID]
				total += st.Served
				pt := pageTarget{TargetStatus: st, Priority: t.Priority, Weight: t.Weight, Region: t.Region}
				switch {
				case st.ThrottledUntil != nil:
					pt.Until = st.ThrottledUntil.UnixMilli()
				case st.FailingUntil != nil:
					pt.Until = st.FailingUntil.UnixMilli()
				case st.DeprioritisedUntil != nil:
					pt.Until = st.DeprioritisedUntil.UnixMilli()
				}
				if st.State == state.StateDeprioritised {
					// The remaining tokens and requests columns say which budget ran low.
					pt.Note = "low remaining budget: passed over until it refills"
				}
				d.Targets = append(d.Targets, pt)
			}
		}
		for i := range d.Targets {
			if total > 0 {
				d.Targets[i].Share = float64(d.Targets[i].Served) / float64(total)
			}
		}
		data.Deployments = append(data.Deployments, d)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'")
	_ = statusPage.Execute(w, data)
}
