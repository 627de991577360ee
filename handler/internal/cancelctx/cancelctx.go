// Package cancelctx is a cancellable context.Context for the request path. It does the work
// of context.WithCancelCause and context.AfterFunc for one request and its attempts without
// their allocations: those make a child context, a closure, a map of children in the parent
// and the parent's Done channel, every time. Here the context lives inside a struct the
// request allocates anyway, its Done channel is made only when asked for, and it tells one
// child context and one function of its cancellation directly. A context the context package
// derives from it (a timeout around a Key Vault read, say) still works: it waits for Done on a
// goroutine of its own, which is fine off the request path.
package cancelctx

import (
	"context"
	"sync"
	"time"
)

// Context is cancelled by Cancel or when its parent is. The zero value is not usable: call Init
// once before anything else. It must not be copied after Init.
type Context struct {
	parent context.Context

	mu         sync.Mutex
	done       chan struct{} // made by the first Done call
	err, cause error
	child      *Context // a Context whose parent this is, cancelled with it
	onCancel   func()   // run once on cancellation, unless stopped first
	// How this Context left its parent's notice: linked when the parent is a Context of this
	// package, stopParent (context.AfterFunc's stop) for any other cancellable parent.
	linked     *Context
	stopParent func() bool
}

// closed is the Done channel of a Context cancelled before anyone asked for one.
var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Init makes c a child of parent: c is cancelled, with the parent's error as its cause, when
// the parent is.
func (c *Context) Init(parent context.Context) {
	c.parent = parent
	if p, ok := parent.(*Context); ok {
		p.mu.Lock()
		switch {
		case p.err != nil:
			err, cause := p.err, p.cause
			p.mu.Unlock()
			c.cancel(err, cause)
			return
		case p.child == nil:
			p.child = c
			c.linked = p
			p.mu.Unlock()
			return
		}
		p.mu.Unlock() // the one child place is taken: fall back to the general way
	}
	if parent.Done() == nil {
		return // never cancelled
	}
	stop := context.AfterFunc(parent, func() { c.cancel(parent.Err(), causeOf(parent)) })
	c.mu.Lock()
	c.stopParent = stop
	c.mu.Unlock()
}

// causeOf is context.Cause, which cannot see this package's causes.
func causeOf(ctx context.Context) error {
	if c, ok := ctx.(*Context); ok {
		return c.Cause()
	}
	return context.Cause(ctx)
}

// Cancel cancels c and its child with cause (context.Canceled if nil) and runs the function
// OnCancel set. Only the first cancellation has an effect. Err then reports context.Canceled,
// and Cause the cause.
func (c *Context) Cancel(cause error) { c.cancel(context.Canceled, cause) }

// cancel cancels c with err (what Err reports: the parent's, for a parent of another kind)
// and cause.
func (c *Context) cancel(err, cause error) {
	if cause == nil {
		cause = err
	}
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err, c.cause = err, cause
	if c.done == nil {
		c.done = closed
	} else {
		close(c.done)
	}
	child, f := c.child, c.onCancel
	c.child, c.onCancel = nil, nil
	linked, stop := c.linked, c.stopParent
	c.linked, c.stopParent = nil, nil
	c.mu.Unlock()

	if linked != nil { // leave the parent's child place free for the next child
		linked.mu.Lock()
		if linked.child == c {
			linked.child = nil
		}
		linked.mu.Unlock()
	}
	if stop != nil {
		stop()
	}
	if f != nil {
		f()
	}
	if child != nil {
		child.cancel(err, cause)
	}
}

// OnCancel arranges for f to run once, on the cancelling goroutine, when c is cancelled; it
// replaces a function set before. It reports false, and keeps nothing, if c is cancelled already.
func (c *Context) OnCancel(f func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return false
	}
	c.onCancel = f
	return true
}

// StopOnCancel forgets the function OnCancel set. It reports true if the function had not run
// and now will not, false if the cancellation has already taken it (it has run or is running).
func (c *Context) StopOnCancel() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	set := c.onCancel != nil
	c.onCancel = nil
	return set
}

// Cause is the cause given to Cancel (or the parent's), nil while c is not cancelled.
func (c *Context) Cause() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cause
}

// Deadline is the parent's.
func (c *Context) Deadline() (time.Time, bool) { return c.parent.Deadline() }

// Done returns a channel closed when c is cancelled.
func (c *Context) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
	}
	return c.done
}

// Err is nil until c is cancelled, then context.Canceled (or, cancelled by a parent of another
// kind, the parent's error).
func (c *Context) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Value is the parent's.
func (c *Context) Value(key any) any { return c.parent.Value(key) }
