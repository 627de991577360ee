package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
)

// TableStore keeps marks in Azure Table Storage, one entity per target in one partition, so that
// every instance of every region reads and writes the same deadlines. Writes merge by taking the
// later deadline under an ETag condition, so no instance ever loses another's later mark.
//
// Reads are incremental: after a full read, List asks only for the entities the service changed
// since the newest change it has seen (by the service's own Timestamp, so no instance's clock is
// involved), reading everything again every minute and after any error. An instance's refresh
// then reads a handful of entities at most, whatever the number of targets, so one partition
// keeps up with as many instances as its transaction rate allows.
type TableStore struct {
	client    *aztables.Client
	partition string

	mu     sync.Mutex
	since  time.Time // the newest Timestamp read; zero: read everything next
	fullAt time.Time // when everything was last read
	// overlap re-reads changes this much older than the newest seen: the service's Timestamps
	// come from more than one clock, so a write can land with a slightly earlier one.
	overlap  time.Duration
	fullEach time.Duration
}

// NewTableStore uses table (created when missing) and partition of the service. Several gateways
// can share one table with different partitions.
func NewTableStore(svc *aztables.ServiceClient, table, partition string) *TableStore {
	return &TableStore{client: svc.NewClient(table), partition: partition, overlap: 5 * time.Second, fullEach: time.Minute}
}

// EnsureTable creates the table if it does not exist.
func (s *TableStore) EnsureTable(ctx context.Context) error {
	_, err := s.client.CreateTable(ctx, nil)
	if err != nil && !hasCode(err, http.StatusConflict, "TableAlreadyExists") {
		return fmt.Errorf("create table: %w", err)
	}
	return nil
}

// rowKey encodes a target id for RowKey, which may not hold '/': account and deployment names
// never contain '|'.
func rowKey(target string) string { return strings.ReplaceAll(target, "/", "|") }

// entity is a mark as stored: times as RFC 3339 UTC strings, readable in Storage Explorer.
type entity struct {
	PartitionKey   string
	RowKey         string
	Target         string
	ThrottledUntil string
	FailingUntil   string
	Status         int32
	Reason         string
	Instance       string
	Updated        string
	Timestamp      time.Time `json:",omitzero"` // set by the service on every write; never sent
}

func toEntity(partition string, m Mark) entity {
	return entity{
		PartitionKey: partition, RowKey: rowKey(m.Target), Target: m.Target,
		ThrottledUntil: formatTime(m.ThrottledUntil), FailingUntil: formatTime(m.FailingUntil),
		Status: int32(m.Status), Reason: m.Reason, Instance: m.Instance, Updated: formatTime(m.Updated),
	}
}

func (e entity) mark() Mark {
	return Mark{
		Target: e.Target, ThrottledUntil: parseTime(e.ThrottledUntil), FailingUntil: parseTime(e.FailingUntil),
		Status: int(e.Status), Reason: e.Reason, Instance: e.Instance, Updated: parseTime(e.Updated),
	}
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func parseTime(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

// mergeAttempts bounds the optimistic-concurrency loop; each retry means another instance wrote
// the same target in between. Retries wait a short random time so that writers racing for one
// entity spread out instead of colliding again.
const mergeAttempts = 20

// Merge writes m, keeping the later of each deadline already stored: read, merge, then replace
// only if the entity is unchanged (ETag), or create it if absent; a lost race is retried.
func (s *TableStore) Merge(ctx context.Context, m Mark) error {
	rk := rowKey(m.Target)
	for i := 0; i < mergeAttempts; i++ {
		got, err := s.client.GetEntity(ctx, s.partition, rk, nil)
		if hasCode(err, http.StatusNotFound, "") {
			b, _ := json.Marshal(toEntity(s.partition, m))
			_, err := s.client.AddEntity(ctx, b, nil)
			if hasCode(err, http.StatusConflict, "") {
				backoff(ctx, i)
				continue // another instance created it first: merge with theirs
			}
			if hasCode(err, http.StatusNotFound, "TableNotFound") {
				if err := s.EnsureTable(ctx); err != nil {
					return err
				}
				continue
			}
			return wrap("add entity", err)
		}
		if err != nil {
			return wrap("get entity", err)
		}
		var cur entity
		if err := json.Unmarshal(got.Value, &cur); err != nil {
			return fmt.Errorf("state table: entity %s: %w", rk, err)
		}
		old := cur.mark()
		merged := old
		merged.Target = m.Target
		merged.merge(m)
		if merged.ThrottledUntil.Equal(old.ThrottledUntil) && merged.FailingUntil.Equal(old.FailingUntil) && !m.Updated.After(old.Updated) {
			return nil // nothing later to say
		}
		b, _ := json.Marshal(toEntity(s.partition, merged))
		etag := got.ETag
		_, err = s.client.UpdateEntity(ctx, b, &aztables.UpdateEntityOptions{IfMatch: &etag, UpdateMode: aztables.UpdateModeReplace})
		if hasCode(err, http.StatusPreconditionFailed, "") {
			backoff(ctx, i)
			continue // changed since we read it: read again and merge again
		}
		return wrap("update entity", err)
	}
	return fmt.Errorf("state table: %s changed under %d attempts to merge", m.Target, mergeAttempts)
}

// backoff sleeps a few milliseconds, more after each lost race, with jitter.
func backoff(ctx context.Context, attempt int) {
	d := time.Duration(1+rand.IntN(5*(attempt+1))) * time.Millisecond
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// List returns the partition's marks and reports in one query: all of them on the first call,
// every minute and after an error; in between, those changed since the previous call (the
// caller keeps and merges what it read before). A full read deletes reports that no instance
// has renewed for an hour (instances that were stopped), so the partition does not grow with
// every instance that ever ran.
func (s *TableStore) List(ctx context.Context) ([]Mark, []Report, error) {
	s.mu.Lock()
	since := s.since
	full := since.IsZero() || time.Since(s.fullAt) >= s.fullEach
	s.mu.Unlock()
	filter := "PartitionKey eq '" + strings.ReplaceAll(s.partition, "'", "''") + "'"
	if !full {
		filter += " and Timestamp gt datetime'" + since.Add(-s.overlap).UTC().Format("2006-01-02T15:04:05.0000000Z") + "'"
	}
	marks, reports, newest, err := s.list(ctx, filter)
	s.mu.Lock()
	switch {
	case err != nil:
		s.since = time.Time{}
	case full:
		s.since, s.fullAt = newest, time.Now()
	case newest.After(s.since):
		s.since = newest
	}
	s.mu.Unlock()
	if full && err == nil {
		live := reports[:0]
		for _, r := range reports {
			if time.Since(r.At) > forgetReportsAfter {
				_, _ = s.client.DeleteEntity(ctx, s.partition, reportKey(r.Instance), nil) // best effort
				continue
			}
			live = append(live, r)
		}
		reports = live
	}
	return marks, reports, err
}

func (s *TableStore) list(ctx context.Context, filter string) ([]Mark, []Report, time.Time, error) {
	pager := s.client.NewListEntitiesPager(&aztables.ListEntitiesOptions{Filter: &filter})
	var out []Mark
	var reports []Report
	var newest time.Time
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if hasCode(err, http.StatusNotFound, "TableNotFound") {
			// Deleted under us, or never created because the table was unreachable at start:
			// nothing is marked, and the table is there for the next write.
			return nil, nil, time.Time{}, s.EnsureTable(ctx)
		}
		if err != nil {
			return nil, nil, time.Time{}, wrap("list entities", err)
		}
		for _, raw := range page.Entities {
			var e entity
			if json.Unmarshal(raw, &e) != nil {
				continue
			}
			if e.Timestamp.After(newest) {
				newest = e.Timestamp
			}
			if strings.HasPrefix(e.RowKey, reportPrefix) {
				var re reportEntity
				if json.Unmarshal(raw, &re) == nil {
					if r, ok := re.report(); ok {
						reports = append(reports, r)
					}
				}
				continue
			}
			if e.Target != "" {
				out = append(out, e.mark())
			}
		}
	}
	return out, reports, newest, nil
}

// reportPrefix starts the RowKey of an instance's report; account names cannot hold '@', so
// no target's RowKey starts with it.
const reportPrefix = "@"

func reportKey(instance string) string { return reportPrefix + ownerKey(instance) }

// reportEntity is an instance's report as stored: its figures as JSON strings (an entity's
// string property holds up to 32K characters: about 400 targets and as many app-deployment
// pairs).
type reportEntity struct {
	PartitionKey string
	RowKey       string
	Instance     string
	At           string
	IntervalMs   int32
	Targets      string
	Apps         string
}

func (e reportEntity) report() (Report, bool) {
	r := Report{Instance: e.Instance, At: parseTime(e.At), Interval: time.Duration(e.IntervalMs) * time.Millisecond}
	if r.Instance == "" || r.At.IsZero() {
		return Report{}, false
	}
	if e.Targets != "" && json.Unmarshal([]byte(e.Targets), &r.Targets) != nil {
		return Report{}, false
	}
	if e.Apps != "" && json.Unmarshal([]byte(e.Apps), &r.Apps) != nil {
		return Report{}, false
	}
	return r, true
}

// Publish writes (replaces) this instance's report: one upsert.
func (s *TableStore) Publish(ctx context.Context, r Report) error {
	e := reportEntity{PartitionKey: s.partition, RowKey: reportKey(r.Instance), Instance: r.Instance,
		At: formatTime(r.At), IntervalMs: int32(min(r.Interval.Milliseconds(), 1<<30))}
	if len(r.Targets) > 0 {
		b, _ := json.Marshal(r.Targets)
		e.Targets = string(b)
	}
	if len(r.Apps) > 0 {
		b, _ := json.Marshal(r.Apps)
		e.Apps = string(b)
	}
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	_, err = s.client.UpsertEntity(ctx, b, &aztables.UpsertEntityOptions{UpdateMode: aztables.UpdateModeReplace})
	if hasCode(err, http.StatusNotFound, "TableNotFound") {
		if err := s.EnsureTable(ctx); err != nil {
			return err
		}
		_, err = s.client.UpsertEntity(ctx, b, &aztables.UpsertEntityOptions{UpdateMode: aztables.UpdateModeReplace})
	}
	return wrap("publish report", err)
}

func hasCode(err error, status int, code string) bool {
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return false
	}
	return re.StatusCode == status && (code == "" || re.ErrorCode == code)
}

// wrap keeps the service's status and error code but not the whole response dump that
// azcore's errors carry, so that logs stay short.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return fmt.Errorf("state table: %s: HTTP %d %s", op, re.StatusCode, re.ErrorCode)
	}
	return fmt.Errorf("state table: %s: %w", op, err)
}

// ownerEntity records which account owns a stateful resource. Owners live in a partition of
// their own beside the marks', so that reading the marks never reads them.
type ownerEntity struct {
	PartitionKey string
	RowKey       string
	Account      string
	Expires      string
}

func (s *TableStore) ownerPartition() string { return s.partition + "-owners" }

// ownerKey makes an id usable as a RowKey, which may not hold '/', '\', '#' or '?'; the
// service's ids never do.
func ownerKey(id string) string {
	return strings.NewReplacer("/", "|", "\\", "|", "#", "|", "?", "|").Replace(id)
}

// PutOwner writes (or replaces) the record of id's owner.
func (s *TableStore) PutOwner(ctx context.Context, id, account string, expires time.Time) error {
	b, err := json.Marshal(ownerEntity{PartitionKey: s.ownerPartition(), RowKey: ownerKey(id), Account: account, Expires: formatTime(expires)})
	if err != nil {
		return err
	}
	if _, err := s.client.UpsertEntity(ctx, b, &aztables.UpsertEntityOptions{UpdateMode: aztables.UpdateModeReplace}); err != nil {
		return wrap("write owner", err)
	}
	return nil
}

// GetOwner reads the record of id's owner: one point read. An expired record is not found
// (and is deleted, so that the table does not keep what nobody can use).
func (s *TableStore) GetOwner(ctx context.Context, id string, now time.Time) (string, bool, error) {
	resp, err := s.client.GetEntity(ctx, s.ownerPartition(), ownerKey(id), nil)
	if err != nil {
		if hasCode(err, http.StatusNotFound, "") {
			return "", false, nil
		}
		return "", false, wrap("read owner", err)
	}
	var e ownerEntity
	if err := json.Unmarshal(resp.Value, &e); err != nil {
		return "", false, fmt.Errorf("read owner: %w", err)
	}
	if exp := parseTime(e.Expires); !now.Before(exp) {
		_, _ = s.client.DeleteEntity(ctx, s.ownerPartition(), ownerKey(id), nil)
		return "", false, nil
	}
	return e.Account, e.Account != "", nil
}
