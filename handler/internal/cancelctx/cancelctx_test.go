package cancelctx

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var errWhy = errors.New("why")

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestCancel(t *testing.T) {
	for _, tc := range []struct {
		name       string
		doneBefore bool  // ask for Done before the cancellation
		cause      error // given to Cancel
		wantCause  error
	}{
		{"with a cause, Done asked before", true, errWhy, errWhy},
		{"with a cause, Done asked after", false, errWhy, errWhy},
		{"without a cause", false, nil, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c Context
			c.Init(context.Background())
			var done <-chan struct{}
			if tc.doneBefore {
				done = c.Done()
				if isClosed(done) {
					t.Fatal("Done closed before Cancel")
				}
			}
			if c.Err() != nil || c.Cause() != nil {
				t.Fatalf("before Cancel: Err %v, Cause %v", c.Err(), c.Cause())
			}
			var ran atomic.Int32
			if !c.OnCancel(func() { ran.Add(1) }) {
				t.Fatal("OnCancel refused on a live context")
			}
			c.Cancel(tc.cause)
			c.Cancel(errors.New("a later cause")) // no effect
			if !tc.doneBefore {
				done = c.Done()
			}
			if !isClosed(done) {
				t.Error("Done not closed after Cancel")
			}
			if !errors.Is(c.Err(), context.Canceled) || c.Cause() != tc.wantCause {
				t.Errorf("Err %v, Cause %v; want context.Canceled, %v", c.Err(), c.Cause(), tc.wantCause)
			}
			if ran.Load() != 1 {
				t.Errorf("OnCancel's function ran %d times, want once", ran.Load())
			}
			if c.StopOnCancel() {
				t.Error("StopOnCancel after the cancellation reported the function as not run")
			}
			if c.OnCancel(func() { ran.Add(1) }) || ran.Load() != 1 {
				t.Error("OnCancel on a cancelled context kept (or ran) the function")
			}
		})
	}
}

func TestStopOnCancel(t *testing.T) {
	var c Context
	c.Init(context.Background())
	ran := false
	c.OnCancel(func() { ran = true })
	if !c.StopOnCancel() {
		t.Fatal("StopOnCancel before the cancellation reported the function as taken")
	}
	c.Cancel(nil)
	if ran {
		t.Error("a stopped function ran")
	}
}

// TestCancelRace: whatever the order of Cancel and StopOnCancel on two goroutines, the function
// runs exactly when StopOnCancel reports false.
func TestCancelRace(t *testing.T) {
	for i := 0; i < 2000; i++ {
		var c Context
		c.Init(context.Background())
		var ran atomic.Bool
		c.OnCancel(func() { ran.Store(true) })
		var stopped bool
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); c.Cancel(errWhy) }()
		go func() { defer wg.Done(); stopped = c.StopOnCancel() }()
		wg.Wait()
		if stopped == ran.Load() {
			t.Fatalf("run %d: StopOnCancel %v but the function ran: %v", i, stopped, ran.Load())
		}
	}
}

func TestChildOfContext(t *testing.T) {
	t.Run("cancelled with its parent, with the parent's cause", func(t *testing.T) {
		var parent, child Context
		parent.Init(context.Background())
		child.Init(&parent)
		var ran bool
		child.OnCancel(func() { ran = true })
		parent.Cancel(errWhy)
		if !isClosed(child.Done()) || child.Cause() != errWhy || !ran {
			t.Errorf("child: done %v, cause %v, function ran %v", isClosed(child.Done()), child.Cause(), ran)
		}
	})
	t.Run("a cancelled child leaves the parent alone and frees its place", func(t *testing.T) {
		var parent, first, second Context
		parent.Init(context.Background())
		first.Init(&parent)
		first.Cancel(errWhy)
		if parent.Err() != nil {
			t.Fatal("cancelling the child cancelled the parent")
		}
		second.Init(&parent)
		if parent.child != &second {
			t.Fatal("the second child did not take the freed place")
		}
		parent.Cancel(nil)
		if first.Cause() != errWhy || second.Cause() != context.Canceled {
			t.Errorf("causes: first %v (want its own), second %v (want the parent's)", first.Cause(), second.Cause())
		}
	})
	t.Run("two children at once both follow the parent", func(t *testing.T) {
		var parent, a, b Context
		parent.Init(context.Background())
		a.Init(&parent)
		b.Init(&parent) // the place is taken: the general way
		parent.Cancel(errWhy)
		if a.Cause() != errWhy {
			t.Errorf("first child's cause %v", a.Cause())
		}
		select {
		case <-b.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("second child not cancelled with its parent")
		}
		if b.Cause() != errWhy {
			t.Errorf("second child's cause %v", b.Cause())
		}
	})
	t.Run("a parent already cancelled cancels the child at once", func(t *testing.T) {
		var parent, child Context
		parent.Init(context.Background())
		parent.Cancel(errWhy)
		child.Init(&parent)
		if child.Cause() != errWhy || child.OnCancel(func() {}) {
			t.Errorf("child of a cancelled parent: cause %v", child.Cause())
		}
	})
}

func TestParentOfAnotherKind(t *testing.T) {
	t.Run("timeout", func(t *testing.T) {
		parent, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		var c Context
		c.Init(parent)
		if d, ok := c.Deadline(); !ok || d.IsZero() {
			t.Error("the parent's deadline is not reported")
		}
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("not cancelled when the parent's deadline passed")
		}
		if !errors.Is(c.Err(), context.DeadlineExceeded) {
			t.Errorf("Err %v, want the parent's context.DeadlineExceeded", c.Err())
		}
	})
	t.Run("cause", func(t *testing.T) {
		parent, cancel := context.WithCancelCause(context.Background())
		var c Context
		c.Init(parent)
		cancel(errWhy)
		<-c.Done()
		if c.Cause() != errWhy || !errors.Is(c.Err(), context.Canceled) {
			t.Errorf("Err %v, Cause %v", c.Err(), c.Cause())
		}
	})
	t.Run("a child cancelled first keeps its own cause", func(t *testing.T) {
		parent, cancel := context.WithCancelCause(context.Background())
		var c Context
		c.Init(parent)
		c.Cancel(errWhy)
		cancel(errors.New("the parent's"))
		if c.Cause() != errWhy {
			t.Errorf("Cause %v, want the child's own", c.Cause())
		}
	})
	t.Run("never cancelled", func(t *testing.T) {
		var c Context
		c.Init(context.WithValue(context.Background(), errWhy, "v"))
		if c.Value(errWhy) != "v" {
			t.Error("the parent's value is not reported")
		}
		if _, ok := c.Deadline(); ok {
			t.Error("a deadline where the parent has none")
		}
		if isClosed(c.Done()) || c.Err() != nil {
			t.Error("cancelled without a cause")
		}
	})
}

// TestStandardChild: a context made from this one by the context package follows it.
func TestStandardChild(t *testing.T) {
	var c Context
	c.Init(context.Background())
	child, cancel := context.WithTimeout(&c, time.Hour)
	defer cancel()
	c.Cancel(errWhy)
	select {
	case <-child.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a standard child context was not cancelled")
	}
}
