package proxy

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestWatchdog: bytes that keep coming keep an idle wait alive however long it lasts; silence
// ends it after the limit; the request's deadline ends it whatever arrives; stages keep their
// own causes.
func TestWatchdog(t *testing.T) {
	run := func(deadline, idle, every, stopAfter time.Duration) (error, time.Duration) {
		ctx, cancel := context.WithCancelCause(context.Background())
		var w watchdog
		start := time.Now()
		w.start(cancel, start.Add(deadline), idle, waitIdle)
		defer w.stop()
		for time.Since(start) < stopAfter && ctx.Err() == nil {
			time.Sleep(every)
			w.progress()
		}
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
			return nil, 0
		}
		return context.Cause(ctx), time.Since(start)
	}
	// Steady bytes every 20 ms for 300 ms under a 60 ms idle limit, then silence.
	cause, took := run(time.Minute, 60*time.Millisecond, 20*time.Millisecond, 300*time.Millisecond)
	if !errors.Is(cause, errIdleTimeout) || took < 340*time.Millisecond || took > 900*time.Millisecond {
		t.Errorf("steady then silent: %v after %v, want the idle timeout 60 ms after the last bytes (~360 ms)", cause, took)
	}
	// Bytes all along, but the request's deadline is 150 ms away.
	cause, took = run(150*time.Millisecond, time.Second, 10*time.Millisecond, time.Minute)
	if !errors.Is(cause, errRequestDeadline) || took < 140*time.Millisecond || took > 700*time.Millisecond {
		t.Errorf("deadline: %v after %v, want the request deadline at ~150 ms", cause, took)
	}

	// A stage other than idle ends at its limit, progress or not.
	ctx, cancel := context.WithCancelCause(context.Background())
	var w watchdog
	w.start(cancel, time.Now().Add(time.Minute), 50*time.Millisecond, waitFirstEvent)
	w.progress()
	<-ctx.Done()
	if cause := context.Cause(ctx); !errors.Is(cause, errFirstEventTimeout) {
		t.Errorf("first-event wait ended by %v", cause)
	}
	w.stop()
}
