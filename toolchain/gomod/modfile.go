package gomod

import (
	"errors"
	"fmt"
	"go/version"
	"os"
	"path"
	"sort"
	"strings"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"

	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/provenance"
	"github.com/kettle-build/kettle/toolchain"
)

// WorkFile is go's workspace file. kettle builds with GOWORK=off, so it has
// no effect on a build; it is still read so that one naming directories
// outside the project is refused like any other outside input.
const WorkFile = "go.work"

// LocalURIPrefix starts the uri of a dependency that is local code: a
// directory of the project that replaces a module (go.mod `replace … =>
// ./dir`). The digest is the dirhash h1 of that directory, not go.sum's
// hash of the registry module it stands in for.
const LocalURIPrefix = toolchain.LocalURIPrefix

// Mod is what kettle reads from go.mod, parsed by golang.org/x/mod in this
// process: no go command reads a submission outside the sandbox.
type Mod struct {
	Module    string
	Go        string // the go directive ("1.22"), may be empty
	Toolchain string // the toolchain directive ("go1.23.4"), may be empty
	Require   []module.Version
	// Replace are the module replacements (replace a [v] => b v').
	Replace []*modfile.Replace
	// Local are the replacements by a directory of the project.
	Local []Local
}

// Local is a module replaced by a directory inside the project.
type Local struct {
	Old module.Version // Version "" when every version is replaced
	Dir string         // slash-separated, cleaned, relative to the project root
}

// ParseMod parses go.mod. Errors are client-safe (they quote the file's own
// line, never a server path).
func ParseMod(data []byte) (*Mod, error) {
	f, err := modfile.Parse(ModFile, data, nil)
	if err != nil {
		return nil, fmt.Errorf("invalid go.mod: %s", oneLine(err.Error()))
	}
	if f.Module == nil || f.Module.Mod.Path == "" {
		return nil, errors.New("invalid go.mod: no module directive")
	}
	m := &Mod{Module: f.Module.Mod.Path}
	if f.Go != nil {
		m.Go = f.Go.Version
	}
	if f.Toolchain != nil {
		m.Toolchain = f.Toolchain.Name
	}
	for _, r := range f.Require {
		m.Require = append(m.Require, r.Mod)
	}
	for _, r := range f.Replace {
		if !modfile.IsDirectoryPath(r.New.Path) {
			m.Replace = append(m.Replace, r)
			continue
		}
		dir, err := insideDir(r.New.Path)
		if err != nil {
			return nil, fmt.Errorf("go.mod replaces %s with %s: %w", r.Old.Path, quotePath(r.New.Path), err)
		}
		m.Local = append(m.Local, Local{Old: r.Old, Dir: dir})
	}
	return m, nil
}

// errOutside is the reason of every refusal of a path that leaves the
// project.
var errOutside = errors.New("a directory outside the project (only directories inside the project can replace a module)")

// insideDir checks, by its text alone, that a replacement or workspace
// directory stays inside the project, and returns it cleaned and relative.
func insideDir(p string) (string, error) {
	if strings.HasPrefix(p, "/") || strings.HasPrefix(p, `\`) || strings.Contains(p, `\`) ||
		len(p) >= 2 && p[1] == ':' || strings.ContainsRune(p, 0) {
		return "", errOutside
	}
	c := path.Clean(p)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", errOutside
	}
	return c, nil
}

// CheckWork reads go.work, if the project has one: kettle builds with
// GOWORK=off, so its `use` and `replace` directories are never built, but
// one that leaves the project is refused so a submission cannot name
// outside paths at all.
func CheckWork(data []byte) error {
	f, err := modfile.ParseWork(WorkFile, data, nil)
	if err != nil {
		return fmt.Errorf("invalid go.work: %s", oneLine(err.Error()))
	}
	for _, u := range f.Use {
		if _, err := insideDir(u.Path); err != nil {
			return fmt.Errorf("go.work uses %s: %w", quotePath(u.Path), errOutside)
		}
	}
	for _, r := range f.Replace {
		if modfile.IsDirectoryPath(r.New.Path) {
			if _, err := insideDir(r.New.Path); err != nil {
				return fmt.Errorf("go.work replaces %s with %s: %w", r.Old.Path, quotePath(r.New.Path), errOutside)
			}
		}
	}
	return nil
}

// CheckToolchain refuses a go.mod that asks for a newer Go than the
// builder's (installed, "go1.26.8"): by its go line (go would refuse it)
// or by its toolchain line (go would download that toolchain, which
// GOTOOLCHAIN=local forbids; building with an older one is not what the
// project asked for).
func (m *Mod) CheckToolchain(installed string) error {
	if !version.IsValid(installed) {
		return nil
	}
	if m.Go != "" && version.Compare("go"+m.Go, installed) > 0 {
		return failure.New(failure.UnsupportedToolchain,
			"go.mod requires go >= %s; this builder has %s", m.Go, installed)
	}
	if t := m.Toolchain; t != "" && t != "default" {
		if !version.IsValid(t) && !version.IsValid(strings.SplitN(t, "-", 2)[0]) {
			return failure.New(failure.InvalidSource, "go.mod: toolchain %q is not a Go version", clip(t))
		}
		if version.Compare(strings.SplitN(t, "-", 2)[0], installed) > 0 {
			return failure.New(failure.UnsupportedToolchain,
				"go.mod asks for toolchain %s; this builder has %s and never downloads another toolchain", clip(t), installed)
		}
	}
	return nil
}

// Dependencies are what the build compiles besides the main module, as
// far as go.mod and go.sum tell: every module content go.sum pins, except
// those go.mod replaces (their code is not what is built), and one entry
// per local replacement, named after the module it replaces, with the
// dirhash of its directory. A module replaced by another module@version is
// recorded as that module (its go.sum line, which go checks).
func (m *Mod) Dependencies(sum *Sum, local map[string]string) []provenance.Dependency {
	targets := map[module.Version]bool{}
	for _, r := range m.Replace {
		targets[r.New] = true
	}
	replaced := func(path, ver string) bool {
		if targets[module.Version{Path: path, Version: ver}] {
			return false
		}
		for _, r := range m.Replace {
			if r.Old.Path == path && (r.Old.Version == "" || r.Old.Version == ver) {
				return true
			}
		}
		for _, l := range m.Local {
			if l.Old.Path == path && (l.Old.Version == "" || l.Old.Version == ver) {
				return true
			}
		}
		return false
	}
	deps := []provenance.Dependency{}
	if sum != nil {
		for _, d := range sum.Dependencies() {
			p, v, _ := strings.Cut(strings.TrimPrefix(d.URI, "pkg:golang/"), "@")
			if !replaced(p, v) {
				deps = append(deps, d)
			}
		}
	}
	for _, l := range m.Local {
		deps = append(deps, provenance.Dependency{
			Digest: provenance.Digest{DigestKey: local[l.Dir]},
			Name:   l.Old.Path,
			URI:    LocalURIPrefix + l.Dir,
		})
	}
	sort.SliceStable(deps, func(i, j int) bool { return deps[i].URI < deps[j].URI })
	return deps
}

// HashTree is toolchain.HashTree: the digest of local code, and of a
// module's directory in the cache (with its module@version prefix).
var HashTree = toolchain.HashTree

// hashLocal checks each local replacement directory of m against the
// project (through root: no symlink may lead out) and hashes it. A
// refusal never says what is outside.
func hashLocal(root *os.Root, m *Mod) (map[string]string, error) {
	out := map[string]string{}
	for _, l := range m.Local {
		if _, done := out[l.Dir]; done {
			continue
		}
		fi, err := root.Stat(l.Dir)
		if err != nil || !fi.IsDir() {
			return nil, failure.New(failure.InvalidSource,
				"go.mod replaces %s with %q, which is not a directory inside the project", l.Old.Path, clip(l.Dir))
		}
		if fi, err := root.Lstat(path.Join(l.Dir, ModFile)); err != nil || !fi.Mode().IsRegular() {
			return nil, failure.New(failure.InvalidSource,
				"go.mod replaces %s with %q, which has no go.mod (a regular file)", l.Old.Path, clip(l.Dir))
		}
		h, err := HashTree(root, l.Dir, "", true)
		if err != nil {
			return nil, failure.Wrap(failure.InvalidSource, err,
				fmt.Sprintf("go.mod replaces %s with %q: its files cannot be hashed (a symlink leaving the project, a directory symlink, or a special file)", l.Old.Path, clip(l.Dir)))
		}
		out[l.Dir] = h
	}
	return out, nil
}

// quotePath quotes a relative path of the submission; an absolute one is
// not repeated (it names something on the server, not in the project).
func quotePath(p string) string {
	if strings.HasPrefix(p, "/") || strings.HasPrefix(p, `\`) || len(p) >= 2 && p[1] == ':' {
		return "an absolute path"
	}
	return fmt.Sprintf("%q", clip(p))
}

// oneLine keeps an error on one line, bounded.
func oneLine(s string) string {
	s = strings.ReplaceAll(strings.TrimSpace(s), "\n", "; ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
