package proxy

import (
	"sync/atomic"
	"time"

	"github.com/aoai-failover/gateway/handler/internal/cancelctx"
)

// wait names what an attempt is waiting for; each has its own limit and its own cause.
type wait int32

const (
	waitDeadline   wait = iota // the request's overall deadline
	waitHeaders                // a non-streaming answer's headers
	waitFirstEvent             // a stream's first event
	waitIdle                   // the next bytes of a body or stream
)

var waitCauses = [...]error{errRequestDeadline, errHeaderTimeout, errFirstEventTimeout, errIdleTimeout}

// watchdog ends an attempt when its current wait runs out, or the request's overall deadline,
// whichever comes first. One timer serves every stage of the attempt; the cancellation's cause
// says which wait ran out. Bytes arriving during the idle wait are only noted (progress): the
// timer, when it fires, checks how long the response has really been silent and waits the
// rest, so a stream of many events costs no timer operation per event.
type watchdog struct {
	timer    *time.Timer
	ctx      *cancelctx.Context // the attempt's, cancelled with the cause
	deadline time.Time
	current  atomic.Int32 // the wait a firing now ends
	limit    atomic.Int64 // the current wait's limit
	last     atomic.Int64 // when the wait started or bytes last arrived, in Unix nanoseconds
}

// start arms the first wait.
func (w *watchdog) start(ctx *cancelctx.Context, deadline time.Time, limit time.Duration, what wait) {
	w.ctx, w.deadline = ctx, deadline
	w.arm(limit, what)
}

// arm starts a wait of at most limit.
func (w *watchdog) arm(limit time.Duration, what wait) {
	now := time.Now()
	w.limit.Store(int64(limit))
	w.last.Store(now.UnixNano())
	if left := w.deadline.Sub(now); left < limit {
		limit, what = left, waitDeadline
	}
	w.current.Store(int32(what))
	if w.timer == nil {
		w.timer = time.AfterFunc(limit, w.fire)
		return
	}
	w.timer.Reset(limit)
}

// progress notes that bytes arrived.
func (w *watchdog) progress() { w.last.Store(time.Now().UnixNano()) }

func (w *watchdog) fire() {
	what := wait(w.current.Load())
	if what == waitIdle {
		now := time.Now()
		rest := time.Duration(w.limit.Load() - (now.UnixNano() - w.last.Load()))
		if rest > 0 { // not silent for the whole limit: wait the rest, within the deadline
			if left := w.deadline.Sub(now); left < rest {
				rest = left
				w.current.Store(int32(waitDeadline))
			}
			w.timer.Reset(rest)
			return
		}
	}
	w.ctx.Cancel(waitCauses[what])
}

func (w *watchdog) stop() {
	if w.timer != nil {
		w.timer.Stop()
	}
}
