package proxy

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/aoai-failover/gateway/handler/internal/apierr"
)

// The apps' token budgets (package budget): a request to a logical deployment reserves its
// estimate before it is planned against targets, and settles with its real usage (or nothing,
// when no answer came) when it ends. An app over budget gets 429 AppTokenBudgetExceeded at once,
// without any target being called.

// Headers saying an app's budget on every answer to a budgeted app (the backend's own
// x-ratelimit-* headers describe the deployment, so the app's are the gateway's own).
const (
	headerAppLimit     = "X-Gateway-App-Limit-Tokens"
	headerAppRemaining = "X-Gateway-App-Remaining-Tokens"
)

// reserve asks the app's budget to admit the request; an app over budget is refused.
func (g *Gateway) reserve(w http.ResponseWriter, c *call, app string) *apierr.Error {
	if g.opt.Budgets == nil || !(c.fam == familyDeployments || c.fam == familyV1 || c.fam == familyResponses) {
		return nil
	}
	gr := g.opt.Budgets.Reserve(app, c.logical, c.cost, c.start)
	if gr.Limited {
		h := w.Header()
		h.Set(headerAppLimit, strconv.FormatInt(gr.Limit, 10))
		h.Set(headerAppRemaining, strconv.FormatInt(gr.Remaining, 10))
	}
	if gr.OK {
		c.grant, c.budgeted = gr, true
		return nil
	}
	c.log.budgetRefused = true
	scope := "overall"
	if gr.Scope != "" {
		scope = "on deployment " + strconv.Quote(gr.Scope)
	}
	var msg string
	if gr.TooLarge {
		msg = fmt.Sprintf("app %q has a budget of %d tokens per minute %s, and this request alone is estimated at %d tokens (a quarter of its body's bytes plus the output tokens it asks for): ask for fewer output tokens",
			app, gr.Limit, scope, gr.Cost)
	} else {
		msg = fmt.Sprintf("app %q has used its budget of %d tokens per minute %s across the gateway: %d tokens left, and this request is estimated at %d; retry after %s",
			app, gr.Limit, scope, gr.Remaining, gr.Cost, gr.RetryAfter.Round(1e6))
	}
	e := apierr.New(http.StatusTooManyRequests, "AppTokenBudgetExceeded", msg)
	setRetryAfter(w.Header(), gr.RetryAfter)
	return e
}

// settle tells the budget what the request used: the answer's usage; its estimate when it was
// served without saying (a stream without include_usage, one the caller left or that broke);
// nothing when no target served it or the target's answer was an error.
func (g *Gateway) settle(c *call) {
	if !c.budgeted {
		return
	}
	var used int64
	switch {
	case c.log.usage != nil:
		used = int64(c.log.usage.Total)
	case c.log.servedBy != "" && (c.log.status < 400 || c.log.status == 499):
		used = c.cost
	}
	g.opt.Budgets.Settle(c.grant, used, g.opt.Now())
}
