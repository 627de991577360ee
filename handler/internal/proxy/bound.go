package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/aoai-failover/gateway/handler/internal/apierr"
	"github.com/aoai-failover/gateway/handler/internal/route"
)

// Stateful resources live in one account: a stored response, a conversation, a file, a batch,
// a vector store. A call on one by id, and a request that builds on one (a Responses turn naming
// its previous_response_id or conversation, a batch naming its input file), is served by that
// account or not at all: failover would reach an account that does not know the id. The owner
// is learned from the answer that created the resource and shared by the fleet (Owners); an id
// nobody has recorded is looked for on the accounts with a GET, which changes nothing.

// kindOf is the kind of resource an id names, by the service's prefixes.
func kindOf(id string) string {
	switch {
	case strings.HasPrefix(id, "resp_"):
		return "responses"
	case strings.HasPrefix(id, "conv_"):
		return "conversations"
	case strings.HasPrefix(id, "file-"), strings.HasPrefix(id, "file_"), strings.HasPrefix(id, "assistant-"):
		return "files"
	case strings.HasPrefix(id, "batch_"):
		return "batches"
	case strings.HasPrefix(id, "vs_"):
		return "vector_stores"
	}
	return ""
}

// planBound plans a call on a resource by id: its owner's account, alone.
func (g *Gateway) planBound(ctx context.Context, c *call) (route.Plan, *apierr.Error) {
	c.boundID = c.id
	owner, ok := g.owner(ctx, c, c.kind, c.id)
	if !ok {
		return route.Plan{}, apierr.New(http.StatusNotFound, "NotFound", fmt.Sprintf(
			"no account behind this gateway holds %s %q (it may have been deleted, or created elsewhere)", singular(c.kind), c.id))
	}
	t, _ := g.opt.Planner.Account(owner)
	c.pinnedTo = owner
	c.log.logical = owner
	return route.Plan{Candidates: []route.Target{t}}, nil
}

// planCollection plans creating or listing account-bound resources: the accounts of the named
// (X-Gateway-Deployment) or default logical deployment, first available first; a batch that
// names its input file goes to the file's account.
func (g *Gateway) planCollection(ctx context.Context, c *call) (route.Plan, *apierr.Error) {
	c.creates = c.method == http.MethodPost
	if c.info.boundTo != "" {
		c.boundID = c.info.boundTo
		if owner, ok := g.owner(ctx, c, kindOf(c.info.boundTo), c.info.boundTo); ok {
			t, _ := g.opt.Planner.Account(owner)
			c.pinnedTo = owner
			c.log.logical = owner
			return route.Plan{Candidates: []route.Target{t}}, nil
		}
	}
	name := headerValue(c.inHeader, "X-Gateway-Deployment")
	if name == "" {
		name = g.opt.DefaultLogical
	}
	if name == "" {
		return route.Plan{}, apierr.New(http.StatusBadRequest, "DeploymentRequired", fmt.Sprintf(
			"name the logical deployment whose account should hold the %s in the X-Gateway-Deployment header (known: %s), or set defaultDeployment in the routing document",
			c.kind, strings.Join(g.opt.Planner.Names(), ", ")))
	}
	c.logical = name
	c.log.logical = name
	plan, ok := g.opt.Planner.Plan(name, g.opt.State, c.start, 0)
	if !ok {
		return route.Plan{}, g.unknownDeployment(name)
	}
	// The deployment's targets, as their accounts: one try per account.
	seen := map[string]bool{}
	var accounts route.Plan
	for _, t := range plan.Candidates {
		if !seen[t.Account] {
			seen[t.Account] = true
			a, _ := g.opt.Planner.Account(t.Account)
			accounts.Candidates = append(accounts.Candidates, a)
		}
	}
	accounts.Skipped = plan.Skipped
	return accounts, nil
}

// pin keeps, of a plan, only the targets on the account that holds the state the request builds
// on. When no target is left because they are throttled or failing, the request fails with
// that reason (forward says so); when the deployment has no target there at all, it cannot be
// served through this deployment.
func (g *Gateway) pin(ctx context.Context, c *call, plan route.Plan, id string) (route.Plan, *apierr.Error) {
	c.boundID = id
	owner, ok := g.owner(ctx, c, kindOf(id), id)
	if !ok {
		// Nobody holds it: any target answers that it does not exist, as Azure does.
		return plan, nil
	}
	c.pinnedTo = owner
	var pinned route.Plan
	for _, t := range plan.Candidates {
		if t.Account == owner {
			pinned.Candidates = append(pinned.Candidates, t)
		}
	}
	for _, s := range plan.Skipped {
		if s.Target.Account == owner {
			pinned.Skipped = append(pinned.Skipped, s)
		}
	}
	if len(pinned.Candidates)+len(pinned.Skipped) == 0 {
		return route.Plan{}, apierr.New(http.StatusBadRequest, "StateInOtherAccount", fmt.Sprintf(
			"%s %q is held by account %q, which serves no target of deployment %q; call a deployment that account serves",
			singular(kindOf(id)), id, owner, c.logical))
	}
	return pinned, nil
}

// owner finds the account that holds id: the fleet's record, else a GET of it on each account
// (the request's deployment's accounts first), which is then recorded.
func (g *Gateway) owner(ctx context.Context, c *call, kind, id string) (string, bool) {
	if kind == "" {
		return "", false
	}
	if account, ok := g.opt.Owners.Lookup(ctx, id, g.opt.Now()); ok {
		if _, known := g.opt.Planner.Account(account); known {
			return account, true
		}
	}
	for _, account := range g.opt.Planner.Accounts(c.logical) {
		if g.holds(ctx, c, account, kind, id) {
			g.opt.Owners.Remember(id, account, g.opt.Now())
			return account, true
		}
	}
	return "", false
}

// holds asks one account whether it has the resource: 200 to a GET of it.
func (g *Gateway) holds(ctx context.Context, c *call, account, kind, id string) bool {
	t, ok := g.opt.Planner.Account(account)
	if !ok {
		return false
	}
	u := url.URL{Scheme: t.Scheme, Host: t.Authority, Path: "/openai/v1/" + kind + "/" + id}
	if c.fam != familyV1 && strings.Contains(c.query, "api-version=") {
		// The caller uses the api-version form: ask in the same form and version.
		u.Path, u.RawQuery = "/openai/"+kind+"/"+id, c.query
	}
	ctx, cancel := context.WithTimeout(ctx, g.opt.Timeouts.FirstByte.D())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return false
	}
	if err := g.opt.Credentials.Authorize(ctx, account, req.Header); err != nil {
		return false
	}
	resp, err := g.opt.Transport.RoundTrip(req)
	if err != nil {
		return false
	}
	drain(resp.Body)
	return resp.StatusCode == http.StatusOK
}

// learnOwner records the owner of the resource a successful answer created, from the answer's
// top-level id (a JSON body) or its response's id (a stream's first events).
func (g *Gateway) learnOwner(c *call, account string, data []byte) bool {
	id := gjson.GetBytes(data, "id").String()
	if kindOf(id) == "" {
		id = gjson.GetBytes(data, "response.id").String()
	}
	if kindOf(id) == "" {
		return false
	}
	g.opt.Owners.Remember(id, account, g.opt.Now())
	return true
}

// eventData is the data of a server-sent event, its data lines joined.
func eventData(ev []byte) []byte {
	var out []byte
	for _, line := range strings.Split(string(ev), "\n") {
		if d, ok := strings.CutPrefix(strings.TrimRight(line, "\r"), "data:"); ok {
			out = append(out, strings.TrimSpace(d)...)
		}
	}
	return out
}

// decodedHead is the start of an answer's body, decoded if it is compressed.
func decodedHead(encoding string, head []byte) []byte {
	dec, ok := decoder(encoding)
	if !ok || dec == nil {
		return head
	}
	r, err := dec(bytes.NewReader(head))
	if err != nil {
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(r, 1<<20))
	return b
}

func singular(kind string) string {
	switch kind {
	case "responses":
		return "response"
	case "conversations":
		return "conversation"
	case "files":
		return "file"
	case "batches":
		return "batch"
	case "vector_stores":
		return "vector store"
	}
	return "resource"
}

// listModels answers GET /openai/v1/models (and /openai/models) with the gateway's own logical
// deployments, in the shape the SDKs parse; with a name, that one model or 404.
func (g *Gateway) listModels(w http.ResponseWriter, name string) int {
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	var out any
	if name != "" {
		if _, ok := g.opt.Planner.Plan(name, g.opt.State, g.opt.Now(), 0); !ok {
			e := g.unknownDeployment(name)
			e.Write(w)
			return e.Status
		}
		out = model{ID: name, Object: "model", OwnedBy: "aoai-gateway"}
	} else {
		list := struct {
			Object string  `json:"object"`
			Data   []model `json:"data"`
		}{Object: "list", Data: []model{}}
		for _, n := range g.opt.Planner.Names() {
			list.Data = append(list.Data, model{ID: n, Object: "model", OwnedBy: "aoai-gateway"})
		}
		out = list
	}
	b, _ := json.Marshal(out)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set(headerServedBy, "none")
	h.Set(headerAttempts, "0")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
	return http.StatusOK
}
