package state

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/aoai-failover/gateway/tests/azurite"
)

// Every Store implementation must pass the same contract.
func TestStoreContract(t *testing.T) {
	t.Run("memory", func(t *testing.T) { storeContract(t, func(string) Store { return NewMemoryStore() }) })
	t.Run("table", func(t *testing.T) {
		az := azurite.Start(t)
		svc, err := NewServiceClient(az.ConnectionString, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		storeContract(t, func(partition string) Store {
			n++
			s := NewTableStore(svc, "gatewaystate"+string(rune('a'+n)), partition)
			if err := s.EnsureTable(context.Background()); err != nil {
				t.Fatal(err)
			}
			return s
		})
	})
}

func storeContract(t *testing.T, newStore func(partition string) Store) {
	ctx := context.Background()
	base := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

	t.Run("merge keeps the later deadlines", func(t *testing.T) {
		s := newStore("p1")
		must(t, s.Merge(ctx, Mark{Target: "swc/micro", ThrottledUntil: base.Add(30 * time.Second), Status: 429, Reason: "first", Instance: "a", Updated: base}))
		must(t, s.Merge(ctx, Mark{Target: "swc/micro", ThrottledUntil: base.Add(10 * time.Second), FailingUntil: base.Add(5 * time.Second), Status: 503, Reason: "second", Instance: "b", Updated: base.Add(time.Second)}))
		must(t, s.Merge(ctx, Mark{Target: "frc/big.v2", FailingUntil: base.Add(time.Minute), Status: 500, Instance: "a", Updated: base}))
		marks := byTarget(t, s)
		m := marks["swc/micro"]
		if !m.ThrottledUntil.Equal(base.Add(30*time.Second)) || !m.FailingUntil.Equal(base.Add(5*time.Second)) {
			t.Errorf("deadlines %+v", m)
		}
		if m.Status != 503 || m.Reason != "second" || m.Instance != "b" || !m.Updated.Equal(base.Add(time.Second)) {
			t.Errorf("newest description not kept: %+v", m)
		}
		if f := marks["frc/big.v2"]; !f.FailingUntil.Equal(base.Add(time.Minute)) || len(marks) != 2 {
			t.Errorf("marks %+v", marks)
		}
	})

	t.Run("partitions are separate", func(t *testing.T) {
		a, b := newStore("gw-a"), newStore("gw-b")
		must(t, a.Merge(ctx, Mark{Target: "x/y", ThrottledUntil: base.Add(time.Minute), Updated: base}))
		if marks := byTarget(t, b); len(marks) != 0 {
			t.Errorf("partition b sees %+v", marks)
		}
	})

	t.Run("concurrent writers never lose the latest deadline", func(t *testing.T) {
		s := newStore("race")
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for i := 1; i <= 12; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				errs <- s.Merge(ctx, Mark{Target: "swc/micro", ThrottledUntil: base.Add(time.Duration(i) * time.Second), Instance: "w", Updated: base})
			}(i)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			must(t, err)
		}
		if m := byTarget(t, s)["swc/micro"]; !m.ThrottledUntil.Equal(base.Add(12 * time.Second)) {
			t.Errorf("deadline %v, want the latest of all writers", m.ThrottledUntil)
		}
	})
}

func byTarget(t *testing.T, s Store) map[string]Mark {
	t.Helper()
	marks, err := s.List(context.Background())
	must(t, err)
	out := map[string]Mark{}
	for _, m := range marks {
		out[m.Target] = m
	}
	return out
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var _ = errors.New
