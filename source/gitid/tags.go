package gitid

import (
	"bytes"
	"encoding/hex"
	"sort"
	"strings"

	"golang.org/x/mod/semver"
)

// Limits of reading tags from a hostile .git.
const (
	maxTags       = 10000 // refs/tags entries considered
	maxTagPeels   = 1000  // tag objects read to peel loose tags
	maxTagDepth   = 8     // directory depth under refs/tags
	maxDirEntries = 100000
)

// ExactTag is `git describe --tags --exact-match` of commit in the
// repository directory gitDir, computed with Go code only: the name of a
// tag (refs/tags/…, loose or packed) that points at commit, directly or
// through annotated tag objects; "" when there is none. With several, an
// annotated tag wins over a lightweight one, then the highest semantic
// version, then the first name in byte order, so the answer does not
// depend on the order of the directory. Errors reading .git yield "".
func ExactTag(gitDir, commit string) string {
	d, err := openDir(gitDir)
	if err != nil {
		return ""
	}
	defer d.Close()
	f, ok := formatOf(commit)
	if !ok {
		return ""
	}
	commit = strings.ToLower(commit)
	r := &repo{d: d, f: f}
	defer r.close()

	type cand struct {
		name, id, peeled string
	}
	byName := map[string]*cand{}
	if data, err := d.readFile("packed-refs", maxPackedRefs); err == nil {
		var last *cand
		for _, line := range bytes.Split(data, []byte("\n")) {
			s := string(line)
			if s == "" || s[0] == '#' {
				continue
			}
			if s[0] == '^' {
				if last != nil && isID(s[1:], f) {
					last.peeled = strings.ToLower(s[1:])
				}
				last = nil
				continue
			}
			id, name, ok := strings.Cut(s, " ")
			last = nil
			if !ok || !isID(id, f) || !strings.HasPrefix(name, "refs/tags/") || !validRefName(name) || len(byName) >= maxTags {
				continue
			}
			last = &cand{name: name, id: strings.ToLower(id)}
			byName[name] = last
		}
	}
	// Loose refs override packed ones of the same name, as in git.
	var walk func(rel string, depth int)
	walk = func(rel string, depth int) {
		if depth > maxTagDepth || len(byName) >= maxTags {
			return
		}
		sub, err := d.sub(rel)
		if err != nil {
			return
		}
		defer sub.Close()
		ents, err := sub.f.ReadDir(maxDirEntries)
		if err != nil && len(ents) == 0 {
			return
		}
		sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
		for _, e := range ents {
			name := rel + "/" + e.Name()
			switch {
			case e.IsDir():
				walk(name, depth+1)
			case e.Type().IsRegular() && validRefName(name) && len(byName) < maxTags:
				b, err := d.readFile(name, maxRefFile)
				if err != nil {
					continue
				}
				id := strings.TrimSpace(string(b))
				if isID(id, f) {
					byName[name] = &cand{name: name, id: strings.ToLower(id)}
				}
			}
		}
	}
	walk("refs/tags", 0)

	var found []tagMatch
	peels := 0
	for _, c := range byName {
		switch {
		case c.id == commit:
			// Lightweight, unless the id is a tag object whose own id
			// equals the commit (impossible: different objects).
			found = append(found, tagMatch{c.name, false})
		case c.peeled == commit:
			found = append(found, tagMatch{c.name, true})
		case c.peeled == "" && peels < maxTagPeels:
			peels++
			if r.peelsTo(c.id, commit) {
				found = append(found, tagMatch{c.name, true})
			}
		}
	}
	return pick(found)
}

// tagMatch is a tag naming the commit.
type tagMatch struct {
	name      string // refs/tags/…
	annotated bool
}

// pick chooses among the tags at one commit as ExactTag documents: an
// annotated tag, then the highest semantic version, then byte order; ""
// for none.
func pick(found []tagMatch) string {
	if len(found) == 0 {
		return ""
	}
	sort.Slice(found, func(i, j int) bool {
		a, b := found[i], found[j]
		if a.annotated != b.annotated {
			return a.annotated
		}
		av, bv := tagSemver(a.name), tagSemver(b.name)
		if c := semver.Compare(av, bv); c != 0 && av != "" && bv != "" {
			return c > 0
		}
		if (av != "") != (bv != "") {
			return av != ""
		}
		return a.name < b.name
	})
	return strings.TrimPrefix(found[0].name, "refs/tags/")
}

// RemoteTag is ExactTag for a shallow clone, which has no tags: it reads
// `git ls-remote --tags` output (the remote's "<id>\trefs/tags/<name>" and
// peeled "<id>\trefs/tags/<name>^{}" lines) and picks, by ExactTag's
// rules, a tag whose target or peeled target is commit. The output is the
// remote's word, so malformed lines and ref names are skipped.
func RemoteTag(lsRemote, commit string) string {
	if _, ok := formatOf(commit); !ok {
		return ""
	}
	commit = strings.ToLower(commit)
	var found []tagMatch
	for name, r := range parseAdvertisement(lsRemote, 2*maxTags).refs {
		if !strings.HasPrefix(name, "refs/tags/") {
			continue
		}
		switch {
		case r.peeled != "" && r.id != "":
			if r.peeled == commit {
				found = append(found, tagMatch{name, true})
			}
		case r.peeled == "" && r.id == commit:
			found = append(found, tagMatch{name, false})
		}
	}
	return pick(found)
}

func tagSemver(ref string) string {
	v := strings.TrimPrefix(ref, "refs/tags/")
	if i := strings.LastIndexByte(v, '/'); i >= 0 {
		v = v[i+1:]
	}
	if !strings.HasPrefix(v, "v") {
		v = "v" + v
	}
	if semver.IsValid(v) {
		return v
	}
	return ""
}

func isID(s string, f Format) bool {
	g, ok := formatOf(s)
	return ok && g == f
}

// peelsTo reports whether the object id is an annotated tag (chain) whose
// target is commit.
func (r *repo) peelsTo(id, commit string) bool {
	raw, err := hex.DecodeString(id)
	if err != nil {
		return false
	}
	for peel := 0; peel <= maxPeel; peel++ {
		r.budget = maxInflateTotal
		typ, data, err := r.object(raw, 0)
		if err != nil || typ != objTag {
			return false
		}
		next, ok := headerID(data, "object ", r.f)
		if !ok {
			return false
		}
		if strings.EqualFold(next, commit) {
			return true
		}
		if raw, err = hex.DecodeString(next); err != nil {
			return false
		}
	}
	return false
}
