package proxy

import (
	"context"
	"sync/atomic"
	"time"
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
// says which wait ran out.
type watchdog struct {
	timer    *time.Timer
	cancel   context.CancelCauseFunc
	deadline time.Time
	current  atomic.Int32 // the wait a firing now ends
}

// start arms the first wait.
func (w *watchdog) start(cancel context.CancelCauseFunc, deadline time.Time, limit time.Duration, what wait) {
	w.cancel, w.deadline = cancel, deadline
	w.arm(limit, what)
}

// arm (re)starts a wait of at most limit.
func (w *watchdog) arm(limit time.Duration, what wait) {
	if left := time.Until(w.deadline); left < limit {
		limit, what = left, waitDeadline
	}
	w.current.Store(int32(what))
	if w.timer == nil {
		w.timer = time.AfterFunc(limit, w.fire)
		return
	}
	w.timer.Reset(limit)
}

func (w *watchdog) fire() { w.cancel(waitCauses[w.current.Load()]) }

func (w *watchdog) stop() {
	if w.timer != nil {
		w.timer.Stop()
	}
}
