package proxy

import (
	"context"
	"sync"
	"time"

	"github.com/aoai-failover/gateway/handler/internal/config"
	"github.com/aoai-failover/gateway/handler/internal/route"
	"github.com/aoai-failover/gateway/handler/internal/state"
)

// The admission wait (routing document: admission.{logical}): when every target of a logical
// deployment is throttled or passed over by the quota model, and the soonest frees within
// maxWait, a request waits for it instead of getting 429 at once, then is planned again.
//
// Waiting requests of one logical deployment form a FIFO queue, bounded in count (maxQueued)
// and in the bytes of the bodies they hold (maxQueuedBytes); past either bound, or when the
// soonest target frees later than the request may wait, the answer is the 429 with retry-after
// as before. Only the request at the head of the queue plans: it sleeps until the soonest
// target frees (or until a request of the deployment ends, which may bring news), plans again,
// and keeps its turn until its first attempt has been counted by the quota model, so that the
// next one plans knowing it. While queued, a request holds no forwarding slot, only its body
// (the slot protects the instance from too many calls at once, and a waiting request makes
// none); it takes a slot when it has a target to try. A caller that leaves leaves the queue at
// once (its context). When the queue is not empty, new requests join it behind the others even
// if a target has room, so that none overtakes a request that waited.

// waitQueue is one logical deployment's queue of requests waiting for a target.
type waitQueue struct {
	maxWait  time.Duration
	maxN     int
	maxBytes int64

	mu      sync.Mutex
	waiters []*waiter // in order of arrival; the first holds the turn
	bytes   int64
}

// waiter is one request's place in a queue.
type waiter struct {
	size int64
	turn chan struct{} // closed when the waiter is first in line
	kick chan struct{} // look again now
	out  bool          // left the queue
}

func newWaitQueue(a config.Admission) *waitQueue {
	return &waitQueue{maxWait: a.MaxWait.D(), maxN: a.MaxQueued, maxBytes: a.MaxQueuedBytes}
}

// join puts a request holding size bytes at the end of the queue; nil when the queue is full.
func (q *waitQueue) join(size int64) *waiter {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.waiters) >= q.maxN || q.bytes+size > q.maxBytes {
		return nil
	}
	w := &waiter{size: size, turn: make(chan struct{}), kick: make(chan struct{}, 1)}
	q.waiters = append(q.waiters, w)
	q.bytes += size
	if len(q.waiters) == 1 {
		close(w.turn)
	}
	return w
}

// leave takes w out of the queue; the next in line gets the turn if w had it.
func (q *waitQueue) leave(w *waiter) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if w.out {
		return
	}
	w.out = true
	q.bytes -= w.size
	for i, o := range q.waiters {
		if o == w {
			copy(q.waiters[i:], q.waiters[i+1:])
			q.waiters[len(q.waiters)-1] = nil
			q.waiters = q.waiters[:len(q.waiters)-1]
			if i == 0 && len(q.waiters) > 0 {
				close(q.waiters[0].turn)
			}
			return
		}
	}
}

// busy reports whether any request is waiting.
func (q *waitQueue) busy() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.waiters) > 0
}

// len is the number of requests waiting, for tests and /status.
func (q *waitQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.waiters)
}

// kickHead tells the request with the turn to plan again now.
func (q *waitQueue) kickHead() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.waiters) > 0 {
		select {
		case q.waiters[0].kick <- struct{}{}:
		default:
		}
	}
}

// await returns the plan to forward: at once when a target has room and nobody waits;
// otherwise after waiting in the queue for a target (or for the wait's end, or the caller's),
// planned again. A plan without candidates means the gateway answers for itself.
func (g *Gateway) await(ctx context.Context, c *call, plan route.Plan) route.Plan {
	q := c.queue
	if len(plan.Candidates) > 0 && !q.busy() {
		return plan
	}
	now := g.opt.Now()
	if c.waitUntil.IsZero() {
		c.waitUntil = now.Add(q.maxWait)
		if end := c.start.Add(g.opt.Timeouts.Request.D()); end.Before(c.waitUntil) {
			c.waitUntil = end
		}
	}
	if len(plan.Candidates) == 0 {
		if soonest, all := freeAt(nil, plan.Skipped); !all || soonest.After(c.waitUntil) {
			return plan // no wait would help: the gateway answers now
		}
	}
	if !now.Before(c.waitUntil) {
		return plan
	}
	w := q.join(int64(len(c.body)))
	if w == nil {
		c.queueFull = true
		return plan // the queue is full: answer (or try) as without a wait
	}
	c.turn = w
	defer func(start time.Time) { c.log.queued += g.opt.Now().Sub(start) }(now)
	end := time.NewTimer(c.waitUntil.Sub(now))
	defer end.Stop()
	select {
	case <-w.turn:
	case <-ctx.Done():
		g.passTurn(c)
		return route.Plan{}
	case <-end.C:
		g.passTurn(c)
		return g.replan(c)
	}
	for {
		plan = g.replan(c)
		if len(plan.Candidates) > 0 {
			return plan // the turn passes once its first attempt is counted
		}
		soonest, all := freeAt(nil, plan.Skipped)
		now = g.opt.Now()
		if !all || soonest.After(c.waitUntil) {
			g.passTurn(c)
			return plan
		}
		sleep := time.NewTimer(max(soonest.Sub(now), 0))
		select {
		case <-sleep.C:
		case <-w.kick:
		case <-ctx.Done():
			sleep.Stop()
			g.passTurn(c)
			return route.Plan{}
		case <-end.C:
			sleep.Stop()
			g.passTurn(c)
			return g.replan(c)
		}
		sleep.Stop()
	}
}

// passTurn takes the request out of its queue, if it is in one: the next in line plans.
func (g *Gateway) passTurn(c *call) {
	if c.turn != nil {
		c.queue.leave(c.turn)
		c.turn = nil
	}
}

// mayWait reports whether a request that no target answered may wait (again): every target was
// throttled or passed over, and the soonest frees before the request's wait ends.
func (g *Gateway) mayWait(c *call, tried []*attempt, skipped []route.Skipped) bool {
	soonest, all := freeAt(tried, skipped)
	if !all || soonest.IsZero() || c.queueFull {
		return false
	}
	now := g.opt.Now()
	if c.waitUntil.IsZero() {
		c.waitUntil = now.Add(c.queue.maxWait)
		if end := c.start.Add(g.opt.Timeouts.Request.D()); end.Before(c.waitUntil) {
			c.waitUntil = end
		}
	}
	return now.Before(c.waitUntil) && !soonest.After(c.waitUntil)
}

// freeAt is when the soonest target frees up, and whether every target is throttled (or passed
// over by the quota model): the condition of the 429 AllTargetsThrottled.
func freeAt(tried []*attempt, skipped []route.Skipped) (soonest time.Time, all bool) {
	all = len(tried)+len(skipped) > 0
	note := func(at time.Time) {
		if !at.IsZero() && (soonest.IsZero() || at.Before(soonest)) {
			soonest = at
		}
	}
	for _, a := range tried {
		if a.kind != state.Throttled || a.noCredential || a.notFound {
			all = false
			continue
		}
		note(a.start.Add(a.dur).Add(a.wait))
	}
	for _, s := range skipped {
		if !s.Throttled {
			all = false
		}
		note(s.Until)
	}
	return soonest, all
}

// Queued returns how many requests wait in each logical deployment's admission queue.
func (g *Gateway) Queued() map[string]int {
	out := map[string]int{}
	for name, q := range g.queues {
		out[name] = q.len()
	}
	return out
}
