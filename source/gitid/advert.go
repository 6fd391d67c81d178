package gitid

import (
	"sort"
	"strings"
)

// maxAdvertised bounds the ref lines read from a remote's advertisement:
// the remote is the attacker's, and its output is cut at 1 MB before this.
const maxAdvertised = 100_000

// Advertisement is what `git ls-remote` printed for a remote: each ref's
// object and, for an annotated tag, the commit it peels to. It is the
// remote's word: malformed lines and invalid ref names are skipped.
type Advertisement struct {
	refs map[string]*advRef
}

type advRef struct{ id, peeled string }

// ParseAdvertisement reads "<id>\t<ref>" lines ("<ref>^{}" for peeled
// tags), ids of 40 or 64 hex digits.
func ParseAdvertisement(lsRemote string) Advertisement {
	return parseAdvertisement(lsRemote, maxAdvertised)
}

// parseAdvertisement reads at most maxLines lines.
func parseAdvertisement(lsRemote string, maxLines int) Advertisement {
	a := Advertisement{refs: map[string]*advRef{}}
	for n, line := range strings.Split(lsRemote, "\n") {
		if n >= maxLines {
			break
		}
		id, name, ok := strings.Cut(strings.TrimRight(line, "\r"), "\t")
		if _, valid := formatOf(id); !ok || !valid {
			continue
		}
		base, peeled := strings.CutSuffix(name, "^{}")
		if base != "HEAD" && !validRefName(base) {
			continue
		}
		r := a.refs[base]
		if r == nil {
			r = &advRef{}
			a.refs[base] = r
		}
		if peeled {
			r.peeled = strings.ToLower(id)
		} else {
			r.id = strings.ToLower(id)
		}
	}
	return a
}

// commit is the commit a ref names: a tag's peeled commit when it has one.
func (r *advRef) commit() string {
	if r.peeled != "" {
		return r.peeled
	}
	return r.id
}

// Named is the commit of branch or tag name (refs/heads/name, else
// refs/tags/name), or "" when the remote has neither.
func (a Advertisement) Named(name string) string {
	for _, full := range []string{"refs/heads/" + name, "refs/tags/" + name} {
		if r, ok := a.refs[full]; ok && r.commit() != "" {
			return r.commit()
		}
	}
	return ""
}

// CommitsWithPrefix are the distinct commits of advertised refs whose id
// starts with prefix (lower-case hex), sorted.
func (a Advertisement) CommitsWithPrefix(prefix string) []string {
	prefix = strings.ToLower(prefix)
	seen := map[string]bool{}
	for _, r := range a.refs {
		if c := r.commit(); c != "" && strings.HasPrefix(c, prefix) {
			seen[c] = true
		}
	}
	out := make([]string, 0, len(seen))
	for c := range seen {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}
