package httpfront

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// indexDoc is the JSON form of a directory index. Path uses the Source's
// convention: no leading slash, "" for the root.
type indexDoc struct {
	Path    string       `json:"path"`
	Entries []indexEntry `json:"entries"`
	// Omitted: entries left out past MaxListing.
	Omitted int `json:"omitted,omitempty"`
}

// MaxListing is the most entries a directory index shows (the first, in
// its order); the rest are counted, not listed. A page of 10,000 rows is
// about 1.5 MB of HTML, already more than a browser shows usefully, and
// a folder of 200,000 files would otherwise cost tens of megabytes per
// request.
const MaxListing = 10_000

// A folder has no size, time or holders of its own: those fields are
// left out for it rather than given as zeros.
type indexEntry struct {
	Name     string    `json:"name"`
	Dir      bool      `json:"dir"`
	Size     *int64    `json:"size,omitempty"`
	Modified time.Time `json:"modified,omitzero"`
	Holders  *int      `json:"holders,omitempty"`
}

// indexHTML is self-contained (inline style, no scripts, no external
// assets) so that the page works when the gateway is the only thing
// reachable, and so that a strict Content-Security-Policy can be sent.
// html/template escapes names in both text and attribute contexts.
const indexHTML = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Index of {{.Title}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse}
th,td{padding:.2em 1em;text-align:left;white-space:nowrap}
th{border-bottom:1px solid #ccc}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.down{color:#b00}
</style>
</head>
<body>
<h1>Index of {{.Title}}</h1>
<table>
<thead><tr><th>Name</th><th>Size</th><th>Modified (UTC)</th><th>Servers</th></tr></thead>
<tbody>
{{- if .Parent}}
<tr><td><a href="../">../</a></td><td></td><td></td><td></td></tr>
{{- end}}
{{- range .Entries}}
<tr><td><a href="{{.Href}}">{{.Name}}</a></td><td class="num">{{.Size}}</td><td>{{.Modified}}</td><td class="num{{if .Down}} down{{end}}">{{.Holders}}</td></tr>
{{- else}}
<tr><td colspan="4">(empty)</td></tr>
{{- end}}
{{- if .Omitted}}
<tr><td colspan="4">… and {{.Omitted}} more not listed (at most {{.Max}} entries are shown)</td></tr>
{{- end}}
</tbody>
</table>
</body>
</html>
`

type htmlIndex struct {
	Title        string
	Parent       bool
	Entries      []htmlEntry
	Omitted, Max int
}

type htmlEntry struct {
	Href, Name, Size, Modified string
	Holders                    string // "" for a folder
	Down                       bool
}

// serveIndex writes the index of dir. Entries with names that could not
// have come from a valid path are dropped (and logged) rather than shown
// as broken or misleading links.
func (h *handler) serveIndex(d *deferredWriter, r *http.Request, dir string, entries []DirEntry) error {
	list := make([]DirEntry, 0, len(entries))
	for _, e := range entries {
		if !validName(e.Name) {
			h.log.DebugContext(r.Context(), "index: skipping invalid entry name",
				"dir", dir, "name", strconv.Quote(e.Name))
			continue
		}
		list = append(list, e)
	}
	// Directories first, then by name: Source order is not guaranteed
	// stable, and a stable order makes the page and the JSON diffable.
	slices.SortFunc(list, func(a, b DirEntry) int {
		if a.IsDir != b.IsDir {
			if a.IsDir {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.Name, b.Name)
	})
	omitted := max(0, len(list)-MaxListing)
	list = list[:len(list)-omitted]

	var body []byte
	var ctype string
	if prefersJSON(r.Header.Values("Accept")) {
		doc := indexDoc{Path: dir, Entries: make([]indexEntry, len(list)), Omitted: omitted}
		for i, e := range list {
			doc.Entries[i] = indexEntry{Name: e.Name, Dir: e.IsDir, Modified: e.ModTime.UTC()}
			if !e.IsDir {
				doc.Entries[i].Size, doc.Entries[i].Holders = &e.Size, &e.Holders
			}
		}
		b, err := json.Marshal(doc)
		if err != nil {
			d.respond(http.StatusInternalServerError, "cannot render index")
			return err
		}
		body, ctype = append(b, '\n'), "application/json"
	} else {
		page := htmlIndex{Title: "/", Parent: dir != "", Entries: make([]htmlEntry, len(list)), Omitted: omitted, Max: MaxListing}
		if dir != "" {
			page.Title = "/" + dir + "/"
		}
		for i, e := range list {
			he := htmlEntry{
				// "./" keeps a name like "javascript:x" or "a:b" from
				// being read as a URL scheme.
				Href: "./" + url.PathEscape(e.Name),
				Name: e.Name,
				Size: "-",
			}
			if e.IsDir {
				// A folder's servers are its files' (no count, no alarm).
				he.Href += "/"
				he.Name += "/"
			} else {
				he.Size = humanSize(e.Size)
				he.Holders, he.Down = strconv.Itoa(e.Holders), e.Holders <= 0
			}
			if !e.ModTime.IsZero() {
				he.Modified = e.ModTime.UTC().Format(time.DateTime)
			}
			page.Entries[i] = he
		}
		var buf bytes.Buffer
		if err := h.index.Execute(&buf, page); err != nil {
			d.respond(http.StatusInternalServerError, "cannot render index")
			return err
		}
		body, ctype = buf.Bytes(), "text/html; charset=utf-8"
	}

	hdr := d.Header()
	hdr.Set("Content-Type", ctype)
	hdr.Set("Content-Length", strconv.Itoa(len(body)))
	hdr.Set("Vary", "Accept")
	// The listing changes as servers join and leave; caches must revalidate.
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	d.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return nil
	}
	_, err := d.Write(body)
	return err
}

// validName reports whether name is a single path element that CleanPath
// would accept.
func validName(name string) bool {
	return name != "" && len(name) <= MaxPathLen && checkElement(name) == nil
}

// prefersJSON reports whether the Accept header values rank application/json
// strictly above text/html. Each type takes the q-value of the most specific
// media range that matches it (RFC 9110, section 12.5.1). Ties, including a
// missing header and "*/*", go to HTML, the default.
func prefersJSON(accept []string) bool {
	qJSON, qHTML := rank{-1, 0}, rank{-1, 0}
	for _, v := range accept {
		for part := range strings.SplitSeq(v, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil {
				continue
			}
			q := 1.0
			if s, ok := params["q"]; ok {
				if q, err = strconv.ParseFloat(s, 64); err != nil || q < 0 || q > 1 {
					continue
				}
			}
			qJSON.match(mt, "application", "json", q)
			qHTML.match(mt, "text", "html", q)
		}
	}
	return qJSON.q > 0 && qJSON.q > qHTML.q
}

// rank is the q-value of the most specific Accept range matching a type.
type rank struct {
	spec int // -1 no match, 0 */*, 1 type/*, 2 type/subtype
	q    float64
}

func (r *rank) match(mediaRange, typ, sub string, q float64) {
	spec := -1
	switch mediaRange {
	case "*/*":
		spec = 0
	case typ + "/*":
		spec = 1
	case typ + "/" + sub:
		spec = 2
	}
	if spec > r.spec {
		r.spec, r.q = spec, q
	}
}

// humanSize formats n bytes with binary prefixes, e.g. "1.5 MiB".
func humanSize(n int64) string {
	if n < 1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	const units = "KMGTPE"
	f := float64(n) / 1024
	i := 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %ciB", f, units[i])
}
