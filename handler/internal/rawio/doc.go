// Package rawio reads and writes TCP sockets without the scheduler's system-call bookkeeping.
//
// Go's sockets are non-blocking: a read or write returns at once, and a goroutine that must
// wait is parked by the network poller, not by the system call. Yet every read and write still
// goes through the scheduler's entry and exit for a call that may block. On a busy proxy that
// costs more than the call: the monitor thread hands the processor of a goroutine "in a system
// call" to another thread, and a process that was idle wakes the monitor thread on its next
// call. A proxy makes four socket calls per request, so the gateway makes them raw: the
// poller still does all the waiting, deadlines and closing work as before.
package rawio
