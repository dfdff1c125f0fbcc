package access

import (
	"container/list"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// rateTable holds one token bucket per client, at most max of them, in
// least-recently-used order.
//
// Memory is bounded whatever the number of source addresses:
//   - a bucket idle for burst/rate has refilled and is the same as a new
//     one, so dropping it forgets nothing; every call drops up to two such
//     buckets from the cold end, so idle clients leave without a sweeper
//     goroutine;
//   - when the table is full of live buckets (more than max clients active
//     within one refill time), the least recently used is dropped and
//     counted (evictions). That client gets a fresh bucket next time: the
//     limit loosens for the coldest client rather than memory growing or
//     new clients being refused. Reaching this takes max distinct /32s or
//     /64s completing TCP handshakes, so spoofed sources cannot.
type rateTable struct {
	limit  rate.Limit
	burst  int
	max    int
	refill time.Duration // time for an empty bucket to fill up

	mu        sync.Mutex
	byKey     map[netip.Addr]*list.Element
	lru       list.List // of *bucket, front = most recent
	evictions uint64
}

type bucket struct {
	key  netip.Addr
	lim  *rate.Limiter
	seen time.Time
}

func newRateTable(limit rate.Limit, burst, max int) *rateTable {
	return &rateTable{
		limit:  limit,
		burst:  burst,
		max:    max,
		refill: time.Duration(float64(burst) / float64(limit) * float64(time.Second)),
		byKey:  map[netip.Addr]*list.Element{},
	}
}

// allow takes a token from key's bucket at now. If there is none, it
// returns false and how long until one is there.
func (t *rateTable) allow(key netip.Addr, now time.Time) (bool, time.Duration) {
	return t.take(key, now, 0)
}

// take takes a token from key's bucket, possibly one that is only there
// after a delay of at most maxDelay: it returns true and the delay the
// caller must wait before serving. If the token would come later, it
// takes nothing and returns false and how long until a token is there.
func (t *rateTable) take(key netip.Addr, now time.Time, maxDelay time.Duration) (bool, time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.dropIdle(now, 2)
	el := t.byKey[key]
	if el == nil {
		if t.lru.Len() >= t.max {
			old := t.lru.Back()
			delete(t.byKey, old.Value.(*bucket).key)
			t.lru.Remove(old)
			t.evictions++
		}
		el = t.lru.PushFront(&bucket{key: key, lim: rate.NewLimiter(t.limit, t.burst)})
		t.byKey[key] = el
	} else {
		t.lru.MoveToFront(el)
	}
	b := el.Value.(*bucket)
	r := b.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); r.OK() && d <= maxDelay {
		// A bucket that lent tokens ahead is full again refill after the
		// last of them, not after now.
		b.seen = now.Add(d)
		return true, d
	}
	// A refused request takes no token, so a client retrying too fast is
	// still served at the sustained rate.
	r.CancelAt(now)
	b.seen = now
	missing := 1 - b.lim.TokensAt(now)
	return false, time.Duration(missing / float64(t.limit) * float64(time.Second))
}

// dropIdle removes up to n buckets, from the cold end, that have been idle
// long enough to be full again.
func (t *rateTable) dropIdle(now time.Time, n int) {
	for ; n > 0; n-- {
		el := t.lru.Back()
		if el == nil {
			return
		}
		b := el.Value.(*bucket)
		if now.Sub(b.seen) < t.refill {
			return
		}
		delete(t.byKey, b.key)
		t.lru.Remove(el)
	}
}

func (t *rateTable) stats() (clients int, evictions uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lru.Len(), t.evictions
}
