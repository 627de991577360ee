package state

import (
	"context"
	"errors"
	"testing"
	"time"
)

type failingOwners struct{}

func (failingOwners) PutOwner(context.Context, string, string, time.Time) error {
	return errors.New("store down")
}
func (failingOwners) GetOwner(context.Context, string, time.Time) (string, bool, error) {
	return "", false, errors.New("store down")
}

func TestOwners(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)

	t.Run("one instance's record reaches another through the store", func(t *testing.T) {
		store := NewMemoryStore()
		a := NewOwners(OwnersOptions{Store: store, TTL: time.Hour})
		b := NewOwners(OwnersOptions{Store: store, TTL: time.Hour})
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { a.Run(runCtx); close(done) }()
		a.Remember("resp_1", "swc", now)
		stop()
		<-done // Run flushes what is pending when it ends
		if acc, ok := b.Lookup(ctx, "resp_1", now); !ok || acc != "swc" {
			t.Fatalf("b: %q %v", acc, ok)
		}
		if _, ok := b.Lookup(ctx, "resp_1", now.Add(2*time.Hour)); ok {
			t.Fatal("an expired record is found")
		}
	})
	t.Run("the cache is bounded, oldest first", func(t *testing.T) {
		o := NewOwners(OwnersOptions{MaxCached: 2})
		o.Remember("a", "x", now)
		o.Remember("b", "x", now)
		o.Remember("c", "x", now)
		if _, ok := o.Lookup(ctx, "a", now); ok {
			t.Error("the oldest record was kept past the bound")
		}
		for _, id := range []string{"b", "c"} {
			if _, ok := o.Lookup(ctx, id, now); !ok {
				t.Errorf("%s lost", id)
			}
		}
		if len(o.cache) != 2 {
			t.Errorf("cache holds %d", len(o.cache))
		}
	})
	t.Run("a store that is down degrades to this instance's memory", func(t *testing.T) {
		o := NewOwners(OwnersOptions{Store: failingOwners{}})
		o.Remember("resp_2", "frc", now)
		o.flush(ctx)
		if acc, ok := o.Lookup(ctx, "resp_2", now); !ok || acc != "frc" {
			t.Fatalf("%q %v", acc, ok)
		}
		if _, ok := o.Lookup(ctx, "resp_3", now); ok {
			t.Fatal("found an id nobody recorded")
		}
	})
}
