// Package state keeps what the gateway knows about each target (throttled, failing, remaining
// quota) in an in-memory view that requests read without waiting, and shares the marks that
// matter to other instances through a Store.
package state

import (
	"context"
	"sync"
	"time"
)

// Mark is what one instance learned about a target that every instance should know: absolute
// deadlines, so that instances can merge them by taking the later one.
type Mark struct {
	Target         string
	ThrottledUntil time.Time
	FailingUntil   time.Time
	Status         int
	Reason         string
	Instance       string
	Updated        time.Time
}

// merge folds o into m, keeping the later deadline of each kind and the newer description.
func (m *Mark) merge(o Mark) {
	if o.ThrottledUntil.After(m.ThrottledUntil) {
		m.ThrottledUntil = o.ThrottledUntil
	}
	if o.FailingUntil.After(m.FailingUntil) {
		m.FailingUntil = o.FailingUntil
	}
	if !o.Updated.Before(m.Updated) {
		m.Status, m.Reason, m.Instance, m.Updated = o.Status, o.Reason, o.Instance, o.Updated
	}
}

// Store is where marks and reports are shared. Merge must never move a deadline earlier.
type Store interface {
	Merge(ctx context.Context, m Mark) error
	// List reads every mark and every instance's latest report, in one read: a refresh costs
	// one call (one table query) however many instances publish.
	List(ctx context.Context) ([]Mark, []Report, error)
	// Publish replaces this instance's report (r.Instance): one write.
	Publish(ctx context.Context, r Report) error
}

// MemoryStore is a Store for one process: state is not shared with other instances (or, in
// tests, with the views that share one MemoryStore).
type MemoryStore struct {
	mu      sync.Mutex
	marks   map[string]Mark
	reports map[string]Report
	owners  map[string]ownerRecord
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{marks: map[string]Mark{}, reports: map[string]Report{}}
}

// Publish keeps r as its instance's report.
func (s *MemoryStore) Publish(_ context.Context, r Report) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reports[r.Instance] = r.clone()
	return nil
}

// Merge keeps the later deadlines of m and what is stored.
func (s *MemoryStore) Merge(_ context.Context, m Mark) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.marks[m.Target]
	if !ok {
		s.marks[m.Target] = m
		return nil
	}
	cur.merge(m)
	s.marks[m.Target] = cur
	return nil
}

// List returns every stored mark and report.
func (s *MemoryStore) List(_ context.Context) ([]Mark, []Report, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Mark, 0, len(s.marks))
	for _, m := range s.marks {
		out = append(out, m)
	}
	reports := make([]Report, 0, len(s.reports))
	for _, r := range s.reports {
		reports = append(reports, r.clone())
	}
	return out, reports, nil
}
