package httpfront

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
)

// DefaultMaxRanges is the most ranges one request may ask for, after
// overlapping and near ones are merged (Options.MaxRanges). Every range
// costs the gateway at least one round trip to a server, so a Range
// header of hundreds of tiny ranges would buy an attacker hundreds of
// READs for a few bytes of response. Clients that ask for several ranges
// (PDF viewers, download managers resuming) ask for a handful.
const DefaultMaxRanges = 64

// mergeGap is the largest gap between two ranges that are sent as one:
// about what a part's headers cost in a multipart/byteranges response
// (RFC 9110, section 15.3.7.2, gives ~80 bytes), so merging never makes
// the response longer by more than the parts it saves would have.
const mergeGap = 80

// byteRange is [start, end) of a file.
type byteRange struct{ start, end int64 }

// planRanges reads a Range header for a file of size bytes and returns
// the header to hand to http.ServeContent ("" to drop it: the whole file
// is sent, 200) and the ranges it will serve, sorted and merged (nil if
// none). net/http serves ranges as they are written: in any order,
// overlapping, and as many as fit in the header. Here they are sorted,
// overlapping and near ones merged (RFC 9110, section 15.3.7.2 allows
// it, whatever order they were asked in), and a request with more than
// maxRanges ranges left is answered with the whole file, as nginx does
// past max_ranges and as RFC 9110 section 14.2 allows ("MAY ignore"):
// the client then pays for every byte it receives, so nothing is
// amplified, and a client that asked in good faith still gets its bytes.
//
// It also adapts the header to RFC 9110 where net/http's parser departs
// from it:
//   - a range unit other than "bytes" must be ignored (section 14.2), where
//     net/http answers 416; the unit is also matched case-insensitively;
//   - a zero-length suffix range ("-0") is unsatisfiable (section 14.1.1),
//     where net/http sends a 206 with an invalid Content-Range.
//
// A header that does not parse is returned as it is, for net/http to
// answer 416; one with no satisfiable range becomes "bytes=<size>-",
// which net/http answers 416 with the right Content-Range.
func planRanges(v string, size int64, maxRanges int) (string, []byteRange) {
	unit, set, ok := strings.Cut(v, "=")
	if !ok || !strings.EqualFold(strings.TrimSpace(unit), "bytes") {
		return "", nil
	}
	var rs []byteRange
	for spec := range strings.SplitSeq(set, ",") {
		spec = strings.TrimSpace(spec)
		if spec == "" {
			continue // empty list elements are allowed (RFC 9110, section 5.6.1)
		}
		r, ok, err := parseRangeSpec(spec, size)
		if err != nil {
			return v, nil
		}
		if ok {
			rs = append(rs, r)
		}
	}
	if len(rs) == 0 {
		return "bytes=" + strconv.FormatInt(size, 10) + "-", nil
	}
	rs = mergeRanges(rs)
	if len(rs) > maxRanges {
		return "", nil
	}
	var b strings.Builder
	b.WriteString("bytes=")
	for i, r := range rs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(r.start, 10))
		b.WriteByte('-')
		b.WriteString(strconv.FormatInt(r.end-1, 10))
	}
	return b.String(), rs
}

// parseRangeSpec parses one range-spec ("a-b", "a-" or "-n") of a file of
// size bytes; ok is false for a valid but unsatisfiable range.
func parseRangeSpec(spec string, size int64) (r byteRange, ok bool, err error) {
	first, last, found := strings.Cut(spec, "-")
	if !found {
		return r, false, strconv.ErrSyntax
	}
	first, last = strings.TrimSpace(first), strings.TrimSpace(last)
	if first == "" { // suffix: the last n bytes
		n, err := parseDigits(last)
		if err != nil {
			return r, false, err
		}
		if n == 0 || size == 0 {
			return r, false, nil
		}
		return byteRange{size - min(n, size), size}, true, nil
	}
	start, err := parseDigits(first)
	if err != nil {
		return r, false, err
	}
	end := size
	if last != "" {
		e, err := parseDigits(last)
		if err != nil {
			return r, false, err
		}
		if e < start {
			return r, false, strconv.ErrSyntax
		}
		end = min(e, size-1) + 1
	}
	if start >= size {
		return r, false, nil
	}
	return byteRange{start, end}, true, nil
}

// parseDigits parses a non-negative decimal number (1*DIGIT; no sign).
func parseDigits(s string) (int64, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, strconv.ErrSyntax
	}
	return strconv.ParseInt(s, 10, 64)
}

// mergeRanges sorts rs and merges ranges that overlap or lie within
// mergeGap of each other, in place.
func mergeRanges(rs []byteRange) []byteRange {
	slices.SortFunc(rs, func(a, b byteRange) int { return cmp.Compare(a.start, b.start) })
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if r.start-last.end <= mergeGap {
			last.end = max(last.end, r.end)
			continue
		}
		out = append(out, r)
	}
	return out
}

// stretchEnd is where the stretch of the file read from pos ends: the
// end of the planned range holding pos, or else the end of the file
// (no Range, or one net/http chose not to honour, e.g. after If-Range).
func stretchEnd(rs []byteRange, pos, size int64) int64 {
	for _, r := range rs {
		if pos >= r.start && pos < r.end {
			return r.end
		}
	}
	return size
}
