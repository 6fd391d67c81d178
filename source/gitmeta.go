package source

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
)

// An uploaded checkout may carry its .git directory (the provenance then
// records its commit, read by package gitid: kettle runs no git on the
// host). Tools inside the sandbox may still run git there, and git honours
// that directory's configuration: core.fsmonitor, core.hooksPath,
// core.worktree, include.path, filter drivers and hooks all make git run
// commands or read files chosen by the client. So .git metadata is
// neutralised during extraction: hooks, alternates and pointers to other
// repositories are dropped, a .git file ("gitdir:" redirect) is dropped, any
// symlink in or as .git is refused (extract.go: a link would show git a
// config the sanitiser never saw), and config files keep only an
// allow-list of inert keys.

// gitEntry reports whether the entry p (cleaned) is .git metadata to drop.
func gitEntry(p, name string, isDir bool) (skip bool, err error) {
	parts := strings.Split(p, "/")
	i := gitIndex(parts)
	if i < 0 {
		return false, nil
	}
	rel := parts[i+1:]
	if len(rel) == 0 {
		// A .git file ("gitdir: …") or link redirects git elsewhere.
		return !isDir, nil
	}
	switch {
	case rel[0] == "hooks", rel[0] == "worktrees":
		return true, nil
	case len(rel) == 1 && (rel[0] == "commondir" || rel[0] == "gitdir"):
		return true, nil
	case len(rel) == 3 && rel[0] == "objects" && rel[1] == "info" && (rel[2] == "alternates" || rel[2] == "http-alternates"):
		return true, nil
	}
	if rel[0] == "modules" {
		// Nested submodule repositories: the same rules apply inside.
		for _, r := range rel {
			if r == "hooks" || r == "commondir" || r == "gitdir" || r == "alternates" || r == "http-alternates" || r == "worktrees" {
				return true, nil
			}
		}
	}
	return false, nil
}

func gitIndex(parts []string) int {
	for i, c := range parts {
		if strings.EqualFold(c, ".git") {
			return i
		}
	}
	return -1
}

// isGitConfig reports whether p is a git configuration file.
func isGitConfig(p string) bool {
	parts := strings.Split(p, "/")
	i := gitIndex(parts)
	if i < 0 {
		return false
	}
	rel := parts[i+1:]
	base := rel[len(rel)-1]
	if base != "config" && base != "config.worktree" {
		return false
	}
	if len(rel) == 1 {
		return true
	}
	if rel[0] != "modules" {
		return false
	}
	for _, r := range rel {
		if r == "refs" || r == "objects" || r == "logs" {
			return false
		}
	}
	return true
}

const maxGitConfig = 1 << 20

// gitConfig writes the sanitised form of a git config entry.
func (e *extractor) gitConfig(p, name string, r io.Reader, remaining int64) error {
	data, err := io.ReadAll(io.LimitReader(&ctxReader{ctx: e.ctx, r: r}, maxGitConfig+1))
	if err != nil {
		return err
	}
	if len(data) > maxGitConfig {
		return refuse(ErrUnsupported, nil, "archive entry %s: git config larger than %d bytes", quote(name), maxGitConfig)
	}
	if _, err := io.Copy(io.Discard, r); err != nil { // let the reader verify checksums
		return err
	}
	out := SanitizeGitConfig(data)
	if int64(len(out)) > remaining {
		return refuse(ErrTooLarge, nil, "the archive unpacks to more than %d bytes", e.lim.MaxBytes)
	}
	f, err := e.root.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("create file: %w", err)
	}
	_, err = f.Write(out)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write file: %w", err)
	}
	e.written += int64(len(out))
	e.files++
	return nil
}

// gitConfigAllow lists the keys kept, by section; a "*" section has a
// subsection (remote "origin").
var gitConfigAllow = map[string]map[string]bool{
	"core":       {"repositoryformatversion": true, "bare": true, "filemode": true, "logallrefupdates": true, "ignorecase": true, "precomposeunicode": true, "symlinks": true},
	"extensions": {"objectformat": true},
	"remote*":    {"url": true, "fetch": true},
	"branch*":    {"remote": true, "merge": true},
}

// SanitizeGitConfig returns a git config holding only inert keys of in
// (repository format, remotes' URLs and refspecs, branch tracking); every
// key that can run a command, read a file, move the work tree or include
// other config is dropped, as is anything it cannot parse with certainty.
func SanitizeGitConfig(in []byte) []byte {
	var out bytes.Buffer
	section, sub, written := "", "", ""
	hasSub := false
	for _, line := range strings.Split(string(in), "\n") {
		l := strings.TrimSpace(line)
		if l == "" || l[0] == '#' || l[0] == ';' {
			continue
		}
		if l[0] == '[' {
			section, sub, hasSub = "", "", false
			end := strings.IndexByte(l, ']')
			if end < 0 {
				continue
			}
			hdr := l[1:end]
			if i := strings.IndexByte(hdr, ' '); i >= 0 {
				s := strings.TrimSpace(hdr[i+1:])
				if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' || strings.ContainsAny(s[1:len(s)-1], "\"\\") {
					continue
				}
				section, sub, hasSub = strings.ToLower(hdr[:i]), s[1:len(s)-1], true
			} else if i := strings.IndexByte(hdr, '.'); i >= 0 {
				section, sub, hasSub = strings.ToLower(hdr[:i]), strings.ToLower(hdr[i+1:]), true
			} else {
				section = strings.ToLower(hdr)
			}
			continue
		}
		if section == "" {
			continue
		}
		key, val, _ := strings.Cut(l, "=")
		key, val = strings.ToLower(strings.TrimSpace(key)), strings.TrimSpace(val)
		if strings.ContainsAny(val, "\"\\#;") || strings.HasPrefix(val, "-") || strings.Contains(val, "::") || hasCtl(val) {
			continue
		}
		name := section
		if hasSub {
			name += "*"
		}
		if !gitConfigAllow[name][key] || !validConfigName(key) {
			continue
		}
		if section == "core" && key == "bare" && strings.ToLower(val) != "false" {
			continue
		}
		hdr := "[" + section + "]"
		if hasSub {
			if !validSubsection(sub) {
				continue
			}
			hdr = fmt.Sprintf("[%s %q]", section, sub)
		}
		if hdr != written {
			out.WriteString(hdr + "\n")
			written = hdr
		}
		fmt.Fprintf(&out, "\t%s = %s\n", key, val)
	}
	return out.Bytes()
}

func hasCtl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return true
		}
	}
	return false
}

func validConfigName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return s != ""
}

func validSubsection(s string) bool {
	return s != "" && !hasCtl(s) && !strings.ContainsAny(s, "\"\\")
}
