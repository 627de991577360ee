package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/tidwall/gjson"

	"github.com/aoai-failover/gateway/handler/internal/apierr"
	"github.com/aoai-failover/gateway/handler/internal/state"
)

// commit sends the attempt's response to the caller: from here on there is no failover.
func (g *Gateway) commit(w http.ResponseWriter, callerCtx context.Context, c *call, a *attempt, attempts int) {
	defer a.close()
	h := w.Header()
	copyResponseHeaders(h, a.resp.Header)
	if v, ok := g.servedBy[a.target.ID]; ok {
		h[headerServedBy] = v // shared and never changed: one slice per target, made once
	} else {
		h.Set(headerServedBy, a.target.ID)
	}
	h[headerAttempts] = attemptsValue(attempts)
	c.log.servedBy, c.log.status, c.log.upstreamID = a.target.ID, a.resp.StatusCode, a.reqID
	rc := http.NewResponseController(w)

	learn := c.creates && a.resp.StatusCode/100 == 2
	if a.events != nil {
		delete(h, "Content-Length")
		h["X-Accel-Buffering"] = accelBufferingNo
		w.WriteHeader(a.resp.StatusCode)
		c.log.firstByte = g.opt.Now().Sub(c.start)
		g.relayEvents(w, rc, callerCtx, c, a, learn)
		return
	}

	head := *a.head
	if a.complete {
		h.Set("Content-Length", strconv.Itoa(len(head)))
	}
	if learn {
		// Before the caller has the answer: its next request may name the new id at once.
		g.learnOwner(c, a.target.Account, decodedHead(contentEncoding(a.resp.Header), head))
	}
	w.WriteHeader(a.resp.StatusCode)
	c.log.firstByte = g.opt.Now().Sub(c.start)
	if _, err := w.Write(head); err != nil {
		c.log.status = 499
		return
	}
	// Send what there is now, and do the bookkeeping (usage, the log line) after the caller
	// has it rather than before.
	_ = rc.Flush()
	enc := contentEncoding(a.resp.Header)
	if a.complete {
		c.log.setUsage(usageOf(enc, head)) // the common case: the whole body is the head
		return
	}
	// The usage is at the end of a body longer than the head: read it as the bytes pass.
	tap := newUsageTap(enc)
	defer tap.close()
	tap.Write(head)
	buf := make([]byte, 32<<10)
	for {
		n, err := a.resp.Body.Read(buf)
		if n > 0 {
			a.watch.progress()
			if _, werr := w.Write(buf[:n]); werr != nil {
				c.log.status = 499
				return // the caller left; closing the attempt cancels the upstream call
			}
			tap.Write(buf[:n])
		}
		if err == io.EOF {
			c.log.setUsage(tap.usage())
			return
		}
		if err != nil {
			if callerCtx.Err() != nil {
				c.log.status = 499
				return
			}
			g.broken(c, a, err)
			// Abort so that the caller sees a broken response, never a truncated one that
			// looks complete.
			panic(http.ErrAbortHandler)
		}
	}
}

// relayEvents passes a stream on event by event, flushing each, until [DONE], the end of the
// stream, or a failure, which the caller learns of through an in-band error event.
func (g *Gateway) relayEvents(w http.ResponseWriter, rc *http.ResponseController, callerCtx context.Context, c *call, a *attempt, learn bool) {
	idleWait := g.opt.Timeouts.StreamIdle.D()
	a.watch.arm(idleWait, waitIdle)
	ev := a.first
	// A created response names its id in its first events (response.created); a few are read.
	learnFrom := 0
	if learn {
		learnFrom = 4
	}
	for {
		if learnFrom > 0 {
			learnFrom--
			if g.learnOwner(c, a.target.Account, eventData(ev)) {
				learnFrom = 0
			}
		}
		if c.log.firstToken == 0 && hasContent(ev) {
			c.log.firstToken = g.opt.Now().Sub(c.start)
		}
		c.log.setUsage(eventUsage(ev))
		if _, err := w.Write(ev); err != nil {
			c.log.status = 499
			return
		}
		if a.events.done {
			endBody(w, rc)
			c.end = g.opt.Now()
			g.keepUpstream(a) // the caller has all of it: this waits on no one
			return
		}
		// Flush before waiting for the network; events that arrived together go out together,
		// which saves a write per event without ever holding one back.
		if !a.events.hasEvent() {
			if err := rc.Flush(); err != nil {
				c.log.status = 499
				return
			}
		}
		a.watch.progress()
		var err error
		ev, err = a.events.next()
		if errors.Is(err, io.EOF) {
			endBody(w, rc)
			return
		}
		if err != nil {
			if callerCtx.Err() != nil {
				c.log.status = 499
				return
			}
			cause := g.broken(c, a, err)
			_, _ = w.Write(errorEvent(cause))
			endBody(w, rc)
			return
		}
	}
}

// endWait bounds the wait for what follows [DONE]: the chunked body's last chunk, which a
// backend sends right after it, often in a TLS record or packet of its own. The connection is
// kept only when the body is read to its end, and a dropped one costs a later request a new
// TCP and TLS handshake.
const endWait = 25 * time.Millisecond

// keepUpstream drains what is left of a stream after [DONE], as a discarded error body is
// drained; a backend that sends nothing more within endWait loses the connection.
func (g *Gateway) keepUpstream(a *attempt) {
	a.watch.arm(endWait, waitEnd)
	drain(a.resp.Body)
}

// bodyEnder is a ResponseWriter that can send the end of a body before the handler returns
// (the gateway's own server can).
type bodyEnder interface{ EndBody() error }

// endBody lets the caller have the whole stream, its end included, now: the request's log line
// and the attempt's clean-up come after, off the caller's wait. Other writers get a flush and
// end the body when the handler returns.
func endBody(w http.ResponseWriter, rc *http.ResponseController) {
	if e, ok := w.(bodyEnder); ok {
		_ = e.EndBody()
		return
	}
	_ = rc.Flush()
}

// broken records a response that failed after it was committed and returns why, for the caller.
func (g *Gateway) broken(c *call, a *attempt, err error) string {
	reason := "the backend's response broke off: " + shortError(err)
	if errors.Is(err, errBadEvent) || errors.Is(err, errEventTooLarge) {
		reason = "the backend sent what the gateway cannot pass on intact: " + err.Error()
	}
	if cause := context.Cause(a.ctx); errors.Is(cause, errIdleTimeout) {
		reason = "the backend's response went silent for more than " + g.opt.Timeouts.StreamIdle.D().String()
	} else if errors.Is(cause, errRequestDeadline) {
		reason = "the request's deadline of " + g.opt.Timeouts.Request.D().String() + " passed"
	}
	c.log.broken = reason
	g.opt.State.Record(a.target.ID, state.Outcome{Kind: state.Failed, Status: a.status, Reason: reason, Quota: state.UnknownQuota})
	return reason
}

var accelBufferingNo = []string{"no"}

// attemptsValues are the common X-Gateway-Attempts values, made once.
var attemptsValues = [...][]string{{"0"}, {"1"}, {"2"}, {"3"}, {"4"}, {"5"}, {"6"}, {"7"}, {"8"}, {"9"}}

func attemptsValue(n int) []string {
	if n >= 0 && n < len(attemptsValues) {
		return attemptsValues[n]
	}
	return []string{strconv.Itoa(n)}
}

// errorEvent is the in-band end of a stream that broke after it was committed: the caller's SDK
// raises it as an error rather than taking the shortened answer for a whole one.
func errorEvent(reason string) []byte {
	return apierr.New(http.StatusBadGateway, "StreamInterrupted", reason+"; the answer is incomplete").Event()
}

// eventReader reads server-sent events line by line and checks each: an event whose data is
// neither JSON nor [DONE], or one over the size limit, ends the stream with an error, never
// silently dropped.
type eventReader struct {
	r      *bufio.Reader
	event  []byte
	maxLen int
	done   bool // the event next returned last is data: [DONE]
}

// defaultMaxEventBytes bounds one event when no limit is set.
const defaultMaxEventBytes = 4 << 20

var (
	errEventTooLarge = errors.New("a stream event exceeded the gateway's size limit for one event")
	errBadEvent      = errors.New("a stream event's data is not JSON")
)

// readerPool recycles the stream readers' buffers: one per stream adds up under load. The
// transport buffers the connection already; this one holds a line at a time (longer lines are
// gathered in the event itself).
var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 1<<10) }}

func newEventReader(r io.Reader, maxLen int) *eventReader {
	if maxLen <= 0 {
		maxLen = defaultMaxEventBytes
	}
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(r)
	return &eventReader{r: br, maxLen: maxLen}
}

// hasEvent reports whether a whole event is already buffered, so that reading it cannot block.
func (e *eventReader) hasEvent() bool {
	b, _ := e.r.Peek(e.r.Buffered())
	b = bytes.TrimLeft(b, "\r\n") // stray blank lines are skipped, they make no event
	return bytes.Contains(b, []byte("\n\n")) || bytes.Contains(b, []byte("\n\r\n"))
}

// release returns the reader's buffer; the reader must not be used afterwards.
func (e *eventReader) release() {
	if e.r != nil {
		e.r.Reset(nil)
		readerPool.Put(e.r)
		e.r = nil
	}
}

// next returns the next whole event, ending in a blank line. At the end of the stream it
// returns io.EOF; an unfinished last event that holds data is still returned first. An event
// that cannot be passed on intact is errBadEvent.
func (e *eventReader) next() ([]byte, error) {
	for {
		ev, err := e.readEvent()
		if len(bytes.TrimSpace(ev)) > 0 { // whitespace-only "events" carry nothing
			if !e.valid(ev) {
				return nil, errBadEvent
			}
			return ev, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

func (e *eventReader) readEvent() ([]byte, error) {
	e.event = e.event[:0]
	for {
		line, err := e.r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			e.event = append(e.event, line...)
			if len(e.event) > e.maxLen {
				return nil, errEventTooLarge
			}
			continue
		}
		if err != nil {
			if errors.Is(err, io.EOF) && len(line) > 0 {
				e.event = append(e.event, line...)
				e.event = append(e.event, '\n', '\n')
				return e.event, io.EOF
			}
			if errors.Is(err, io.EOF) && len(bytes.TrimSpace(e.event)) > 0 {
				return append(e.event, '\n'), io.EOF
			}
			return nil, err
		}
		if isBlank(line) {
			if len(e.event) == 0 {
				continue // stray blank lines between events
			}
			e.event = append(e.event, '\n')
			return e.event, nil
		}
		if len(e.event)+len(line) > e.maxLen {
			return nil, errEventTooLarge
		}
		e.event = append(e.event, line...)
	}
}

func isBlank(line []byte) bool {
	return len(line) == 1 || (len(line) == 2 && line[0] == '\r')
}

// valid: every data line of the event is JSON or [DONE]; an event without data (a comment,
// a bare "event:" line) is passed on as it is. It notes whether the event is [DONE].
//
// gjson's validator accepts exactly what encoding/json.Valid accepts (FuzzValidatorsAgree) at
// about 2.5x its speed, and a stream checks every event it passes on.
func (e *eventReader) valid(ev []byte) bool {
	e.done = false
	rest := ev
	for len(rest) > 0 {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i], rest[i+1:]
		} else {
			rest = nil
		}
		data, ok := bytes.CutPrefix(line, []byte("data:"))
		if !ok {
			continue
		}
		data = bytes.TrimSpace(data)
		if bytes.Equal(data, []byte("[DONE]")) {
			e.done = true
		} else if !gjson.ValidBytes(data) {
			return false
		}
	}
	return true
}

// hasContent: the event carries generated text, which marks the time to first token.
func hasContent(ev []byte) bool {
	return bytes.Contains(ev, []byte(`"content":"`)) && !bytes.Contains(ev, []byte(`"content":""`)) ||
		bytes.Contains(ev, []byte(`"text":"`)) || bytes.Contains(ev, []byte(`"delta":"`))
}

// Usage is the token count an answer reports.
type Usage struct {
	Prompt     int `json:"prompt_tokens"`
	Completion int `json:"completion_tokens"`
	Total      int `json:"total_tokens"`
	Input      int `json:"input_tokens"`
	Output     int `json:"output_tokens"`
}

func (u *Usage) normalise() {
	if u.Prompt == 0 && u.Input != 0 {
		u.Prompt, u.Input = u.Input, 0
	}
	if u.Completion == 0 && u.Output != 0 {
		u.Completion, u.Output = u.Output, 0
	}
	if u.Total == 0 {
		u.Total = u.Prompt + u.Completion
	}
}

var usageKey = []byte(`"usage"`)

// findUsage reads the last "usage" object in a JSON body without decoding the rest: a
// reverse search and a scan of that one object, because it runs on every answer.
func findUsage(body []byte) (Usage, bool) {
	i := bytes.LastIndex(body, usageKey)
	if i < 0 {
		return Usage{}, false
	}
	s := scanner{b: body, i: i + len(usageKey)}
	s.space()
	if !s.eat(':') {
		return Usage{}, false
	}
	s.space()
	if !s.eat('{') {
		return Usage{}, false
	}
	var u Usage
	for s.i < len(body) {
		s.space()
		if s.eat('}') {
			break
		}
		s.eat(',')
		s.space()
		if s.i >= len(body) || body[s.i] != '"' {
			return Usage{}, false
		}
		kStart := s.i
		s.skipString()
		key := body[kStart:s.i]
		s.space()
		if !s.eat(':') {
			return Usage{}, false
		}
		s.space()
		vStart := s.i
		s.skipValue()
		n, err := strconv.Atoi(string(body[vStart:s.i]))
		if err != nil {
			continue // nested details, nulls
		}
		switch string(key) {
		case `"prompt_tokens"`:
			u.Prompt = n
		case `"completion_tokens"`:
			u.Completion = n
		case `"total_tokens"`:
			u.Total = n
		case `"input_tokens"`:
			u.Input = n
		case `"output_tokens"`:
			u.Output = n
		}
	}
	u.normalise()
	if u.Total == 0 {
		return Usage{}, false
	}
	return u, true
}

// usageTail finds events that may hold usage: it runs on every event, and a search that starts
// at a quote stops at every key and string of the JSON (about 3.5x slower on chat chunks).
var usageTail = []byte(`usage"`)

func eventUsage(ev []byte) (Usage, bool) {
	if !bytes.Contains(ev, usageTail) {
		return Usage{}, false
	}
	return findUsage(ev)
}
