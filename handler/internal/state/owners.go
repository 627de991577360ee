package state

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// OwnerStore is where the owners of stateful resources are shared: which account holds a
// response, a conversation, a file, a batch or a vector store. Ids are the service's own
// (resp_..., conv_..., file-..., batch_..., vs_...), unique across accounts.
type OwnerStore interface {
	PutOwner(ctx context.Context, id, account string, expires time.Time) error
	// GetOwner returns the account that holds id; found is false when no live record exists.
	GetOwner(ctx context.Context, id string, now time.Time) (account string, found bool, err error)
}

// OwnersOptions configure Owners.
type OwnersOptions struct {
	Store OwnerStore // nil: this instance's memory only
	// TTL is how long a record lives: Azure OpenAI keeps stored responses 30 days.
	TTL time.Duration
	// MaxCached bounds the records this instance keeps in memory (the oldest go first).
	MaxCached int
	// LookupTimeout bounds one read of the store on the request path.
	LookupTimeout time.Duration
	Logger        *slog.Logger
}

// Owners remembers which account owns each stateful resource, for this instance in a bounded
// cache and for the fleet in the store. Remember never waits: records are written through in
// the background (Run). Lookup reads the cache, then the store; a record another instance
// has not written yet is not found, and the caller falls back to asking the accounts.
type Owners struct {
	opt OwnersOptions

	mu    sync.Mutex
	cache map[string]ownerRecord
	order []string // ids in the order cached, for eviction; a ring over the slice
	next  int

	pendMu  sync.Mutex
	pending map[string]ownerRecord
	kick    chan struct{}
}

type ownerRecord struct {
	account string
	expires time.Time
}

// NewOwners returns an empty Owners.
func NewOwners(opt OwnersOptions) *Owners {
	if opt.MaxCached <= 0 {
		opt.MaxCached = 100_000
	}
	if opt.TTL <= 0 {
		opt.TTL = 30 * 24 * time.Hour
	}
	if opt.LookupTimeout <= 0 {
		opt.LookupTimeout = 2 * time.Second
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	return &Owners{opt: opt, cache: map[string]ownerRecord{}, pending: map[string]ownerRecord{}, kick: make(chan struct{}, 1)}
}

// Remember records that account owns id, from now on for the TTL.
func (o *Owners) Remember(id, account string, now time.Time) {
	if id == "" || account == "" {
		return
	}
	r := ownerRecord{account: account, expires: now.Add(o.opt.TTL)}
	o.cachePut(id, r)
	if o.opt.Store == nil {
		return
	}
	o.pendMu.Lock()
	if len(o.pending) < o.opt.MaxCached {
		o.pending[id] = r
	}
	o.pendMu.Unlock()
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

// Lookup returns the account that owns id: from the cache, else from the store.
func (o *Owners) Lookup(ctx context.Context, id string, now time.Time) (string, bool) {
	o.mu.Lock()
	r, ok := o.cache[id]
	o.mu.Unlock()
	if ok && now.Before(r.expires) {
		return r.account, true
	}
	if o.opt.Store == nil {
		return "", false
	}
	ctx, cancel := context.WithTimeout(ctx, o.opt.LookupTimeout)
	defer cancel()
	account, found, err := o.opt.Store.GetOwner(ctx, id, now)
	if err != nil {
		o.opt.Logger.Warn("could not read a resource's owner from the state store; asking the accounts", "error", err)
		return "", false
	}
	if !found {
		return "", false
	}
	o.cachePut(id, ownerRecord{account: account, expires: now.Add(o.opt.TTL)})
	return account, true
}

func (o *Owners) cachePut(id string, r ownerRecord) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.cache[id]; !ok {
		if len(o.order) < o.opt.MaxCached {
			o.order = append(o.order, id)
		} else {
			delete(o.cache, o.order[o.next])
			o.order[o.next] = id
			o.next = (o.next + 1) % len(o.order)
		}
	}
	o.cache[id] = r
}

// Run writes remembered records through to the store until ctx ends, and once more then.
func (o *Owners) Run(ctx context.Context) {
	if o.opt.Store == nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			o.flush(fctx)
			cancel()
			return
		case <-o.kick:
			o.flush(ctx)
		}
	}
}

func (o *Owners) flush(ctx context.Context) {
	o.pendMu.Lock()
	batch := o.pending
	o.pending = map[string]ownerRecord{}
	o.pendMu.Unlock()
	for id, r := range batch {
		if err := o.opt.Store.PutOwner(ctx, id, r.account, r.expires); err != nil {
			o.opt.Logger.Warn("could not share a resource's owner through the state store; other instances will ask the accounts", "error", err)
		}
	}
}

// PutOwner keeps the record in memory.
func (s *MemoryStore) PutOwner(_ context.Context, id, account string, expires time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.owners == nil {
		s.owners = map[string]ownerRecord{}
	}
	s.owners[id] = ownerRecord{account: account, expires: expires}
	return nil
}

// GetOwner reads a record kept in memory.
func (s *MemoryStore) GetOwner(_ context.Context, id string, now time.Time) (string, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.owners[id]
	if !ok || !now.Before(r.expires) {
		return "", false, nil
	}
	return r.account, true, nil
}
