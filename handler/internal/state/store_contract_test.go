package state

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
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
			s := NewTableStore(svc, fmt.Sprintf("contract%d", n), partition)
			if err := s.EnsureTable(context.Background()); err != nil {
				t.Fatal(err)
			}
			return s
		})

		t.Run("a missing table reads as empty and is created", func(t *testing.T) {
			s := NewTableStore(svc, "nevercreated", "p")
			marks, _, err := s.List(context.Background())
			if err != nil || len(marks) != 0 {
				t.Fatalf("%v %v", marks, err)
			}
			must(t, s.Merge(context.Background(), Mark{Target: "a/b", ThrottledUntil: time.Now().Add(time.Minute), Updated: time.Now()}))
		})

		t.Run("writers in two processes never lose the later deadline", func(t *testing.T) {
			s := NewTableStore(svc, "twoprocesses", "p")
			must(t, s.EnsureTable(context.Background()))
			base := time.Now().UTC().Truncate(time.Second)
			var cmds []*exec.Cmd
			outs := make([]*bytes.Buffer, 2)
			for i, offset := range []string{"0", "1"} {
				cmd := exec.Command(os.Args[0], "-test.run=^TestWriterProcess$", "-test.v")
				cmd.Env = append(os.Environ(), "STATE_WRITER_CONN="+az.ConnectionString, "STATE_WRITER_OFFSET="+offset, "STATE_WRITER_BASE="+base.Format(time.RFC3339))
				outs[i] = &bytes.Buffer{}
				cmd.Stdout, cmd.Stderr = outs[i], outs[i]
				must(t, cmd.Start())
				cmds = append(cmds, cmd)
			}
			for i, c := range cmds {
				if err := c.Wait(); err != nil {
					t.Fatalf("writer process %d: %v\n%s", i, err, outs[i])
				}
			}
			m := byTarget(t, s)["swc/micro"]
			if want := base.Add(2 * writerRounds * time.Second); !m.ThrottledUntil.Equal(want) {
				t.Errorf("deadline %v, want %v (the latest either process wrote)", m.ThrottledUntil, want)
			}
		})
	})
}

const writerRounds = 20

// TestWriterProcess is one of the two writer processes above; alone it does nothing.
func TestWriterProcess(t *testing.T) {
	conn := os.Getenv("STATE_WRITER_CONN")
	if conn == "" {
		t.Skip("a helper process of TestStoreContract")
	}
	svc, err := NewServiceClient(conn, "", nil)
	must(t, err)
	s := NewTableStore(svc, "twoprocesses", "p")
	offset, _ := strconv.Atoi(os.Getenv("STATE_WRITER_OFFSET"))
	base, _ := time.Parse(time.RFC3339, os.Getenv("STATE_WRITER_BASE"))
	// The two processes interleave deadlines: 0 writes odd seconds, 1 writes even ones, each
	// in rising order, so the winner is the last write of process 1 whatever the timing.
	for i := 1; i <= writerRounds; i++ {
		sec := 2*i - 1 + offset
		must(t, s.Merge(context.Background(), Mark{Target: "swc/micro", ThrottledUntil: base.Add(time.Duration(sec) * time.Second), Instance: "p" + strconv.Itoa(offset), Updated: time.Now()}))
	}
}

func storeContract(t *testing.T, newStore func(partition string) Store) {
	ctx := context.Background()
	base := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

	t.Run("owners: written, read, replaced, expired, apart from marks", func(t *testing.T) {
		ctx := context.Background()
		st := newStore("own")
		os, ok := st.(OwnerStore)
		if !ok {
			t.Fatalf("%T keeps no owners", st)
		}
		now := time.Now().UTC().Truncate(time.Second)
		if _, found, err := os.GetOwner(ctx, "resp_unknown", now); err != nil || found {
			t.Fatalf("unknown id: %v %v", found, err)
		}
		must(t, os.PutOwner(ctx, "resp_1", "swc", now.Add(time.Hour)))
		must(t, os.PutOwner(ctx, "conv_1", "frc", now.Add(time.Hour)))
		if a, found, err := os.GetOwner(ctx, "resp_1", now); err != nil || !found || a != "swc" {
			t.Fatalf("resp_1: %q %v %v", a, found, err)
		}
		must(t, os.PutOwner(ctx, "resp_1", "frc", now.Add(time.Hour)))
		if a, _, _ := os.GetOwner(ctx, "resp_1", now); a != "frc" {
			t.Fatalf("replaced: %q", a)
		}
		if _, found, _ := os.GetOwner(ctx, "conv_1", now.Add(2*time.Hour)); found {
			t.Fatal("an expired record is found")
		}
		if marks, _, err := st.List(ctx); err != nil || len(marks) != 0 {
			t.Fatalf("owners read as marks: %v %v", marks, err)
		}
		other := newStore("other").(OwnerStore)
		if _, found, _ := other.GetOwner(ctx, "resp_1", now); found {
			t.Fatal("partitions share owners")
		}
	})
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

	t.Run("expired marks stay readable and out of effect", func(t *testing.T) {
		s := newStore("expiry")
		past := time.Now().Add(-time.Minute)
		must(t, s.Merge(ctx, Mark{Target: "a/x", ThrottledUntil: past, Updated: past}))
		v := NewView(Options{Targets: []string{"a/x"}, Store: s, CircuitFailures: 3})
		must(t, v.Sync(ctx))
		if _, _, skip := v.Unavailable("a/x", time.Now()); skip {
			t.Error("an expired mark kept the target out")
		}
	})

	t.Run("reports: published, replaced, read with the marks, apart per partition", func(t *testing.T) {
		s := newStore("reports")
		now := time.Now().UTC().Truncate(time.Millisecond)
		must(t, s.Merge(ctx, Mark{Target: "a/x", ThrottledUntil: now.Add(time.Minute), Updated: now}))
		r := Report{Instance: "host-1", At: now, Interval: time.Second,
			Targets: map[string]Rate{"a/x": {Tokens: 1234.5, Requests: 2.25}},
			Apps:    map[string]map[string]int64{"app-a": {"chat": 900}}}
		must(t, s.Publish(ctx, r))
		must(t, s.Publish(ctx, Report{Instance: "host-2", At: now, Interval: time.Second}))
		r.At, r.Targets["a/x"] = now.Add(time.Second), Rate{Tokens: 10}
		must(t, s.Publish(ctx, r))
		marks, reports, err := s.List(ctx)
		must(t, err)
		if len(marks) != 1 || marks[0].Target != "a/x" {
			t.Errorf("marks %+v", marks)
		}
		byName := map[string]Report{}
		for _, r := range reports {
			byName[r.Instance] = r
		}
		got := byName["host-1"]
		if len(reports) != 2 || !got.At.Equal(now.Add(time.Second)) || got.Interval != time.Second ||
			got.Targets["a/x"] != (Rate{Tokens: 10}) || got.Apps["app-a"]["chat"] != 900 {
			t.Errorf("reports %+v", reports)
		}
		if _, reports, _ := newStore("reports-other").List(ctx); len(reports) != 0 {
			t.Errorf("partitions share reports: %+v", reports)
		}
	})

	t.Run("an empty store lists nothing", func(t *testing.T) {
		if marks := byTarget(t, newStore("empty")); len(marks) != 0 {
			t.Errorf("%v", marks)
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
	marks, _, err := s.List(context.Background())
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

// After its first, full read a TableStore reads only what changed since, by the service's clock.
func TestTableStoreReadsIncrementally(t *testing.T) {
	az := azurite.Start(t)
	svc, err := NewServiceClient(az.ConnectionString, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s := NewTableStore(svc, "incremental", "p")
	s.overlap = 0
	must(t, s.EnsureTable(ctx))
	later := time.Now().Add(time.Hour)
	must(t, s.Merge(ctx, Mark{Target: "a/x", ThrottledUntil: later, Updated: time.Now()}))
	must(t, s.Merge(ctx, Mark{Target: "b/y", FailingUntil: later, Updated: time.Now()}))
	if marks, _, err := s.List(ctx); err != nil || len(marks) != 2 {
		t.Fatalf("first read: %v %v", marks, err)
	}
	time.Sleep(20 * time.Millisecond) // the next write gets a later service Timestamp
	must(t, s.Merge(ctx, Mark{Target: "c/z", ThrottledUntil: later, Updated: time.Now()}))
	marks, _, err := s.List(ctx)
	if err != nil || len(marks) != 1 || marks[0].Target != "c/z" {
		t.Fatalf("second read returned %+v (%v), want only the new mark", marks, err)
	}
	// Every minute (here: at once) everything is read again.
	s.fullEach = 0
	if marks, _, err := s.List(ctx); err != nil || len(marks) != 3 {
		t.Fatalf("full read: %v %v", marks, err)
	}
}
