package fetch

import "slices"

// span is a half-open byte interval [lo, hi) relative to a chunk.
type span struct{ lo, hi int }

// spanSet is a sorted list of disjoint, non-adjacent spans: the bytes of a
// chunk received so far. Data arrives mostly in order, so the common case
// extends the last span in place.
type spanSet []span

// add inserts [lo, hi) and returns how many bytes were new.
func (s *spanSet) add(lo, hi int) int {
	ss := *s
	if n := len(ss); n > 0 && lo >= ss[n-1].lo && lo <= ss[n-1].hi {
		if hi <= ss[n-1].hi {
			return 0
		}
		added := hi - ss[n-1].hi
		ss[n-1].hi = hi
		return added
	}
	// General case: find overlap region, merge.
	i := 0
	for i < len(ss) && ss[i].hi < lo {
		i++
	}
	j := i
	covered := 0
	nlo, nhi := lo, hi
	for j < len(ss) && ss[j].lo <= hi {
		a, b := max(ss[j].lo, lo), min(ss[j].hi, hi)
		if b > a {
			covered += b - a
		}
		nlo, nhi = min(nlo, ss[j].lo), max(nhi, ss[j].hi)
		j++
	}
	*s = slices.Replace(ss, i, j, span{nlo, nhi}) // in place: no allocation
	return hi - lo - covered
}

// missing appends to dst the gaps of s within [0, n).
func (s spanSet) missing(dst []span, n int) []span {
	at := 0
	for _, sp := range s {
		if sp.lo > at {
			dst = append(dst, span{at, sp.lo})
		}
		at = sp.hi
	}
	if at < n {
		dst = append(dst, span{at, n})
	}
	return dst
}

// covers reports whether [0, n) is entirely present.
func (s spanSet) covers(n int) bool {
	return n == 0 || len(s) == 1 && s[0].lo == 0 && s[0].hi >= n
}

// coversRange reports whether [lo, hi) is entirely present.
func (s spanSet) coversRange(lo, hi int) bool {
	for _, sp := range s {
		if sp.lo <= lo && hi <= sp.hi {
			return true
		}
		if sp.lo > lo {
			return false
		}
	}
	return lo >= hi
}

// remove takes [lo, hi) out of the set (bytes that failed verification
// and must be fetched again).
func (s *spanSet) remove(lo, hi int) {
	var out spanSet
	for _, sp := range *s {
		if sp.hi <= lo || sp.lo >= hi {
			out = append(out, sp)
			continue
		}
		if sp.lo < lo {
			out = append(out, span{sp.lo, lo})
		}
		if sp.hi > hi {
			out = append(out, span{hi, sp.hi})
		}
	}
	*s = out
}
