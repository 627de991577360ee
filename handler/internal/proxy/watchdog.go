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
	waitEnd                    // a finished stream's last chunk, read only to keep the connection
)

var waitCauses = [...]error{errRequestDeadline, errHeaderTimeout, errFirstEventTimeout, errIdleTimeout, errEndTimeout}

// watchdog ends an attempt when its current wait runs out, or the request's overall deadline,
// whichever comes first. One timer serves every stage of the attempt; the cancellation's cause
// says which wait ran out. The timer is moved only to fire earlier: bytes arriving only note the
// time (progress), and a new wait that ends later than the timer is just recorded. When the
// timer fires it checks whether the current wait is really over and, if not, waits the rest.
// So a stream of many events costs no timer operation per event, and an answer costs one timer
// for its header wait and its body wait together.
type watchdog struct {
	timer    *time.Timer
	cancel   context.CancelCauseFunc // the attempt's context's, called with the cause
	deadline time.Time
	current  atomic.Int32 // the wait a firing now ends
	limit    atomic.Int64 // the current wait's limit
	last     atomic.Int64 // when the wait started or bytes last arrived, in Unix nanoseconds
	fireAt   atomic.Int64 // when the timer is set to fire, in Unix nanoseconds
	stopped  atomic.Bool
}

// start arms the first wait.
func (w *watchdog) start(cancel context.CancelCauseFunc, deadline time.Time, limit time.Duration, what wait) {
	w.cancel, w.deadline = cancel, deadline
	w.arm(limit, what)
}

// arm starts a wait of at most limit.
func (w *watchdog) arm(limit time.Duration, what wait) {
	now := time.Now()
	if left := w.deadline.Sub(now); left < limit {
		limit, what = left, waitDeadline
	}
	w.limit.Store(int64(limit))
	w.last.Store(now.UnixNano())
	w.current.Store(int32(what))
	due := now.UnixNano() + int64(limit)
	switch {
	case w.timer == nil:
		w.fireAt.Store(due)
		w.timer = time.AfterFunc(limit, w.fire)
	case due < w.fireAt.Load():
		w.fireAt.Store(due)
		w.timer.Reset(limit)
	}
}

// progress notes that bytes arrived.
func (w *watchdog) progress() { w.last.Store(time.Now().UnixNano()) }

func (w *watchdog) fire() {
	if w.stopped.Load() {
		return
	}
	now := time.Now().UnixNano()
	what := wait(w.current.Load())
	due := w.last.Load() + w.limit.Load()
	if end := w.deadline.UnixNano(); end <= due {
		due, what = end, waitDeadline
	}
	if now < due { // bytes came, or a longer wait replaced the one the timer was set for
		w.fireAt.Store(due)
		w.timer.Reset(time.Duration(due - now))
		return
	}
	w.cancel(waitCauses[what])
}

func (w *watchdog) stop() {
	w.stopped.Store(true)
	if w.timer != nil {
		w.timer.Stop()
	}
}
