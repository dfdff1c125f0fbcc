package access

import (
	"context"
	"net/netip"
	"sync"

	"golang.org/x/sync/semaphore"
)

// slotTable bounds the requests one client has in progress at once. A
// request over the bound waits for a slot (it is queued, not refused): a
// download manager that opens more parallel requests than the bound is
// slowed to the bound, never answered with an error it would not retry.
//
// Memory: an entry exists only while its client has a request in
// progress or waiting, so the table holds at most one entry per request
// being served, which the connection limits and HTTP/2's stream limit
// already bound.
type slotTable struct {
	max int

	mu sync.Mutex
	by map[netip.Addr]*slots
}

type slots struct {
	sem   *semaphore.Weighted
	users int // requests holding or waiting for a slot
}

func newSlotTable(max int) *slotTable {
	return &slotTable{max: max, by: map[netip.Addr]*slots{}}
}

// acquire waits for a slot of key until ctx is done. waited says whether
// the request had to queue.
func (t *slotTable) acquire(ctx context.Context, key netip.Addr) (release func(), waited bool, err error) {
	t.mu.Lock()
	s := t.by[key]
	if s == nil {
		s = &slots{sem: semaphore.NewWeighted(int64(t.max))}
		t.by[key] = s
	}
	s.users++
	t.mu.Unlock()
	if !s.sem.TryAcquire(1) {
		waited = true
		if err := s.sem.Acquire(ctx, 1); err != nil {
			t.leave(key, s)
			return nil, true, err
		}
	}
	return func() { s.sem.Release(1); t.leave(key, s) }, waited, nil
}

func (t *slotTable) leave(key netip.Addr, s *slots) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s.users--; s.users == 0 {
		delete(t.by, key)
	}
}

// clients is how many clients have a request in progress or waiting.
func (t *slotTable) clients() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.by)
}
