package aoaisim

import (
	"bufio"
	"compress/gzip"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Record is what the simulator saw of one request and what it answered, for tests: whether a
// gateway rewrote the deployment, which credential it sent, and that its caller got exactly
// the bytes the simulator wrote.
type Record struct {
	// ID is the request's apim-request-id (and x-request-id), which the answer carried.
	ID       string
	At       time.Time
	Method   string
	Path     string
	RawQuery string
	// Deployment is the deployment the request named: the path's name on the deployments
	// route, the body's model on the v1 and responses routes. Empty for calls on stored
	// resources (a response, a conversation, a file, ...), which name none.
	Deployment string
	// Model is the body's "model" (a JSON string or a multipart form field), as it arrived.
	Model string
	// APIKey and Authorization are the credential headers as they arrived.
	APIKey        string
	Authorization string
	ContentType   string
	// RequestHeader is every header of the request, credentials included.
	RequestHeader http.Header
	Body          []byte
	// Status, Header and Response are the answer: its status, its headers and its body as the
	// simulator wrote it, before any compression (Compressed says whether it was gzipped on
	// the wire). A stream's Response holds every event.
	Status     int
	Header     http.Header
	Response   []byte
	Compressed bool
	// Done is false while the answer is being written.
	Done bool
	// Trimmed: Body and Response were dropped to keep the records' memory bounded.
	Trimmed bool
}

const (
	defaultMaxRecords = 2000
	maxRecordedBytes  = 256 << 20 // bodies and answers kept across all records
)

type recordLog struct {
	mu      sync.Mutex
	max     int // records kept; <0 none
	recs    []*Record
	byID    map[string]*Record
	bytes   int
	changed chan struct{} // closed and replaced when a record is done
}

func newRecordLog(max int) *recordLog {
	if max == 0 {
		max = defaultMaxRecords
	}
	return &recordLog{max: max, byID: map[string]*Record{}, changed: make(chan struct{})}
}

func (l *recordLog) add(rec *Record) {
	if l.max < 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, rec)
	l.byID[rec.ID] = rec
	for len(l.recs) > l.max {
		old := l.recs[0]
		l.recs[0] = nil
		l.recs = l.recs[1:]
		delete(l.byID, old.ID)
		l.bytes -= len(old.Body) + len(old.Response)
	}
}

func (l *recordLog) done(rec *Record, f func(*Record)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f(rec)
	rec.Done = true
	l.bytes += len(rec.Body) + len(rec.Response)
	for i := 0; l.bytes > maxRecordedBytes && i < len(l.recs); i++ {
		if old := l.recs[i]; old.Done && !old.Trimmed && old != rec {
			l.bytes -= len(old.Body) + len(old.Response)
			old.Body, old.Response, old.Trimmed = nil, nil, true
		}
	}
	close(l.changed)
	l.changed = make(chan struct{})
}

func copyRecord(r *Record) Record {
	c := *r
	c.Header = r.Header.Clone()
	c.RequestHeader = r.RequestHeader.Clone()
	return c
}

// Records returns a copy of every request recorded, oldest first (the last 2,000 by default,
// Config.MaxRecords; bodies beyond 256 MiB in all are dropped from the oldest).
func (s *Simulator) Records() []Record {
	l := s.records
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Record, 0, len(l.recs))
	for _, r := range l.recs {
		out = append(out, copyRecord(r))
	}
	return out
}

// RecordOf returns the record of the request whose answer carried apim-request-id id, waiting
// up to wait for its answer to be written completely.
func (s *Simulator) RecordOf(id string, wait time.Duration) (Record, bool) {
	l := s.records
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		r, ok := l.byID[id]
		changed := l.changed
		if ok && r.Done {
			c := copyRecord(r)
			l.mu.Unlock()
			return c, true
		}
		l.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			if ok {
				l.mu.Lock()
				c := copyRecord(r)
				l.mu.Unlock()
				return c, false
			}
			return Record{}, false
		}
	}
}

// ResetRecords forgets every record.
func (s *Simulator) ResetRecords() {
	l := s.records
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs, l.byID, l.bytes = nil, map[string]*Record{}, 0
}

// recorder is the ResponseWriter every handler writes to: it keeps a copy of the answer for
// the record and gzips JSON answers for callers that accept it when the account compresses.
type recorder struct {
	w          http.ResponseWriter
	log        *recordLog
	rec        *Record
	gzipOK     bool
	noCompress bool // set by a fault that must send exactly the bytes it promised
	gz         *gzip.Writer
	wrote      bool
	status     int
	header     http.Header
	buf        []byte
	model      string
	deployment string
	body       []byte
}

func (rw *recorder) Header() http.Header { return rw.w.Header() }

func (rw *recorder) WriteHeader(code int) {
	if rw.wrote {
		return
	}
	rw.wrote, rw.status = true, code
	h := rw.w.Header()
	if rw.gzipOK && !rw.noCompress && code != http.StatusNoContent && strings.HasPrefix(h.Get("Content-Type"), "application/json") {
		h.Del("Content-Length")
		h.Set("Content-Encoding", "gzip")
		h.Add("Vary", "Accept-Encoding")
		rw.gz = gzip.NewWriter(rw.w)
	}
	rw.header = h.Clone()
	rw.w.WriteHeader(code)
}

func (rw *recorder) Write(b []byte) (int, error) {
	if !rw.wrote {
		rw.WriteHeader(http.StatusOK)
	}
	rw.buf = append(rw.buf, b...)
	if rw.gz != nil {
		return rw.gz.Write(b)
	}
	return rw.w.Write(b)
}

func (rw *recorder) Flush() {
	if rw.gz != nil {
		_ = rw.gz.Flush()
	}
	if f, ok := rw.w.(http.Flusher); ok {
		f.Flush()
	}
}

func (rw *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return rw.w.(http.Hijacker).Hijack()
}

func (rw *recorder) Unwrap() http.ResponseWriter { return rw.w }

// finish completes the record; it runs when the handler returns, panics included.
func (rw *recorder) finish() {
	if rw.gz != nil {
		_ = rw.gz.Close()
	}
	if rw.log.max < 0 {
		return
	}
	rw.log.done(rw.rec, func(r *Record) {
		r.Status, r.Header, r.Response, r.Compressed = rw.status, rw.header, rw.buf, rw.gz != nil
		r.Model, r.Deployment, r.Body = rw.model, rw.deployment, rw.body
	})
}

// noCompression makes w send its bytes as they are written.
func noCompression(w http.ResponseWriter) {
	if rw, ok := w.(*recorder); ok {
		rw.noCompress = true
	}
}

// saw notes what the request named, for its record.
func saw(w http.ResponseWriter, deployment, model string) {
	if rw, ok := w.(*recorder); ok {
		rw.deployment, rw.model = deployment, model
	}
}

func acceptsGzip(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept-Encoding") {
		for _, part := range strings.Split(v, ",") {
			name, q, _ := strings.Cut(strings.TrimSpace(part), ";")
			if strings.EqualFold(strings.TrimSpace(name), "gzip") && strings.ReplaceAll(strings.TrimSpace(q), " ", "") != "q=0" {
				return true
			}
		}
	}
	return false
}
