package gitid

import "strings"

const (
	maxConfig = 1 << 20
	maxURL    = 4096
)

// OriginURL returns remote.origin.url of the repository directory gitDir
// as `git remote get-url origin` would (the first value), or "" when there
// is none or the config cannot be read with certainty. Only .git/config
// itself is read (no include.path, no system or global config), through
// a no-follow open.
func OriginURL(gitDir string) string {
	d, err := openDir(gitDir)
	if err != nil {
		return ""
	}
	defer d.Close()
	data, err := d.readFile("config", maxConfig)
	if err != nil {
		return ""
	}
	return originURL(data)
}

// originURL parses the subset of git's config syntax that names a remote
// URL: `[remote "origin"]` (or the legacy `[remote.origin]`) and an
// unquoted, unescaped `url = value`. Anything else is skipped; a value with
// quotes, backslashes or control characters is not trusted and ends the
// search with "".
func originURL(data []byte) string {
	in := false
	for _, line := range strings.Split(string(data), "\n") {
		l := strings.TrimSpace(strings.TrimSuffix(line, "\r"))
		if l == "" || l[0] == '#' || l[0] == ';' {
			continue
		}
		if l[0] == '[' {
			end := strings.IndexByte(l, ']')
			if end < 0 {
				in = false
				continue
			}
			hdr := l[1:end]
			sec, sub, quoted := hdr, "", false
			if i := strings.IndexByte(hdr, ' '); i >= 0 {
				sec, sub, quoted = hdr[:i], strings.TrimSpace(hdr[i+1:]), true
			} else if i := strings.IndexByte(hdr, '.'); i >= 0 {
				sec, sub = hdr[:i], strings.ToLower(hdr[i+1:])
			}
			if quoted {
				if len(sub) < 2 || sub[0] != '"' || sub[len(sub)-1] != '"' || strings.ContainsAny(sub[1:len(sub)-1], "\"\\") {
					in = false
					continue
				}
				sub = sub[1 : len(sub)-1]
			}
			in = strings.EqualFold(sec, "remote") && sub == "origin"
			if rest := strings.TrimSpace(l[end+1:]); rest != "" {
				l = rest // "[remote "origin"] url = …" on one line
			} else {
				continue
			}
		}
		if !in {
			continue
		}
		key, val, ok := strings.Cut(l, "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(key), "url") {
			continue
		}
		val = strings.TrimSpace(val)
		if i := strings.IndexAny(val, "#;"); i >= 0 {
			val = strings.TrimSpace(val[:i])
		}
		if val == "" || len(val) > maxURL || strings.ContainsAny(val, "\"\\") || hasCtl(val) {
			return ""
		}
		return val
	}
	return ""
}

func hasCtl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return true
		}
	}
	return false
}
