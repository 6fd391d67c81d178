package cargo

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/kettle-build/kettle/internal/lazyre"
)

// Config is what kettle takes from the project's .cargo/config.toml: the
// source replacements (vendored directories, local registries inside the
// project, mirrors) and the alternative registries' index URLs. Nothing
// else of it reaches the fetch phase, which runs in a copy of the project
// holding only the manifests and Cargo.lock; the build phase reads the
// file itself, with every key that names a program overridden.
type Config struct {
	// Sources are the [source.<name>] tables, by name.
	Sources map[string]*Source
	// Registries are the [registries.<name>] index URLs, by name.
	Registries map[string]string
	// CredentialRegistries are the registries whose credential-provider
	// the project sets (overridden in the build).
	CredentialRegistries []string
	// Linker is true when a [target.*] table names a linker (overridden
	// for the host in the build).
	Linker bool
}

// Source is one [source.<name>] table.
type Source struct {
	ReplaceWith string
	Registry    string
	Git         string
	Branch      string
	Tag         string
	Rev         string
	// Directory and LocalRegistry are project-relative (checked inside).
	Directory     string
	LocalRegistry string
}

const maxSourceName = 512

var (
	// nameRE is cargo's rule for registry names.
	nameRE = lazyre.New(`^[A-Za-z0-9_-]{1,64}$`)
	// sourceRE admits source names like cargo vendor's
	// "git+https://github.com/x/y?branch=main" (quoted on the command line),
	// at most maxSourceName bytes (checked apart: a counted repetition
	// makes a large program that every process compiles at init).
	sourceRE = lazyre.New(`^[\x21\x23-\x5b\x5d-\x7e]+$`)
)

// ReadConfig reads .cargo/config.toml (or the legacy .cargo/config) of the
// project root, the only project config file cargo reads (cargo reads those
// of the working directory and its parents; kettle runs cargo in the project
// root, whose parents are kettle's own directories). Keys that would make
// cargo read outside the project, or config kettle cannot check, are
// refused; see docs/security/cargo.md.
func ReadConfig(root *os.Root) (*Config, error) {
	c := &Config{Sources: map[string]*Source{}, Registries: map[string]string{}}
	var found []string
	for _, name := range []string{".cargo/config.toml", ".cargo/config"} {
		if _, err := root.Lstat(name); err == nil {
			found = append(found, name)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, refuse("%s cannot be read inside the project", name)
		}
	}
	if len(found) == 0 {
		return c, nil
	}
	if len(found) > 1 {
		return nil, refuse("both .cargo/config and .cargo/config.toml exist; keep one")
	}
	name := found[0]
	data, err := readFile(root, name, maxManifestBytes)
	if err != nil {
		return nil, refuse("%s cannot be read inside the project", name)
	}
	if err := c.parse(root, name, data); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Config) parse(root *os.Root, name string, data []byte) error {
	var m map[string]any
	if err := toml.Unmarshal(data, &m); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return refuse("%s: line %d column %d: %s", name, row, col, clip(de.String()))
		}
		return refuse("%s is not valid TOML", name)
	}
	// Config files may include others (stable since cargo 1.9x); kettle
	// would have to follow and check them all.
	if _, ok := m["include"]; ok {
		return refuse("%s: include is not supported", name)
	}
	if _, ok := m["paths"]; ok {
		return refuse("%s: path overrides (paths = [...]) are not supported; use [patch] in Cargo.toml with a path inside the project", name)
	}
	if _, ok := m["patch"]; ok {
		return refuse("%s: [patch] in cargo configuration is not supported; put it in Cargo.toml", name)
	}
	for _, v := range table(m["target"]) {
		if _, ok := table(v)["linker"]; ok {
			c.Linker = true
		}
	}
	for rname, v := range table(m["registries"]) {
		t := table(v)
		if !nameRE.MatchString(rname) {
			return refuse("%s: registry name %q is not supported", name, clip(rname))
		}
		if idx, ok := str(t["index"]); ok {
			if isFileURL(idx) || !strings.Contains(idx, "://") {
				return refuse("%s: registries.%s.index %q is not a network URL", name, rname, clip(idx))
			}
			c.Registries[rname] = idx
		}
		if _, ok := t["credential-provider"]; ok {
			c.CredentialRegistries = append(c.CredentialRegistries, rname)
		}
	}
	sort.Strings(c.CredentialRegistries)
	for sname, v := range table(m["source"]) {
		t := table(v)
		if t == nil {
			return refuse("%s: source.%s is not a table", name, clip(sname))
		}
		if len(sname) > maxSourceName || !sourceRE.MatchString(sname) {
			return refuse("%s: source name %q is not supported", name, clip(sname))
		}
		s := &Source{}
		for key, val := range t {
			v, ok := str(val)
			if !ok {
				return refuse("%s: source.%s.%s is not a string", name, sname, clip(key))
			}
			switch key {
			case "replace-with":
				s.ReplaceWith = v
			case "registry":
				if isFileURL(v) || isFileURL("registry+"+v) {
					return refuse("%s: source.%s.registry %q is a local path; use local-registry inside the project", name, sname, clip(v))
				}
				s.Registry = v
			case "git":
				s.Git = v
			case "branch":
				s.Branch = v
			case "tag":
				s.Tag = v
			case "rev":
				s.Rev = v
			case "directory", "local-registry":
				// Paths in cargo config are relative to the directory
				// holding .cargo/.
				q, err := inside(root, ".", v, fmt.Sprintf("%s: source.%s.%s", name, sname, key))
				if err != nil {
					return err
				}
				if fi, err := root.Stat(q); err != nil || !fi.IsDir() {
					return refuse("%s: source.%s.%s %q is not a directory of the project", name, sname, key, clip(v))
				}
				if key == "directory" {
					s.Directory = q
				} else {
					s.LocalRegistry = q
				}
			default:
				return refuse("%s: source.%s.%s is not supported", name, sname, clip(key))
			}
		}
		kinds := 0
		for _, k := range []string{s.Registry, s.Git, s.Directory, s.LocalRegistry} {
			if k != "" {
				kinds++
			}
		}
		if kinds > 1 {
			return refuse("%s: source.%s names more than one kind of source", name, sname)
		}
		c.Sources[sname] = s
	}
	// A chain of replacements must end in a defined source.
	for sname := range c.Sources {
		if _, err := c.resolve(sname); err != nil {
			return refuse("%s: %v", name, err)
		}
	}
	return nil
}

// resolve follows replace-with from the source named name to the source
// that cargo really reads (nil when name is not replaced: the original).
func (c *Config) resolve(name string) (*Source, error) {
	var last *Source
	for i := 0; ; i++ {
		s := c.Sources[name]
		if s == nil {
			if last == nil {
				return nil, nil
			}
			return nil, fmt.Errorf("source %q is replaced by %q, which is not defined", clip(name), clip(last.ReplaceWith))
		}
		if s.ReplaceWith == "" {
			if last == nil {
				return nil, nil // a definition only, not a replacement
			}
			return s, nil
		}
		if i > len(c.Sources) {
			return nil, fmt.Errorf("source replacement of %q loops", clip(name))
		}
		last, name = s, s.ReplaceWith
	}
}

// crates.io's source ids as they appear in Cargo.lock.
const (
	cratesIOGit    = "registry+https://github.com/rust-lang/crates.io-index"
	cratesIOSparse = "sparse+https://index.crates.io/"
)

// canonicalGit is cargo's canonical form of a git URL for source identity
// (CanonicalUrl): no trailing slash or ".git", host lower-case, and the
// path lower-case on github.com only. Kept as strict as cargo's: when kettle
// and cargo disagree, a vendored copy must end in a refusal (see
// checkVendored), never in kettle recording a vendored crate that cargo
// fetched from git.
func canonicalGit(u string) string {
	pu, err := url.Parse(u)
	if err != nil || pu.Host == "" {
		return strings.TrimSuffix(strings.TrimSuffix(u, "/"), ".git")
	}
	pu.Scheme, pu.Host = strings.ToLower(pu.Scheme), strings.ToLower(pu.Host)
	if pu.Host == "github.com" {
		pu.Path = strings.ToLower(pu.Path)
	}
	pu.Path = strings.TrimSuffix(strings.TrimSuffix(pu.Path, "/"), ".git")
	pu.RawPath = ""
	return pu.String()
}

// sourceName finds the [source] table whose identity is the Cargo.lock
// source string src ("" when none).
func (c *Config) sourceName(src string) string {
	if src == cratesIOGit || src == cratesIOSparse {
		if _, ok := c.Sources["crates-io"]; ok {
			return "crates-io"
		}
	}
	lockURL, ref := src, ""
	if i := strings.IndexByte(lockURL, '#'); i >= 0 {
		lockURL = lockURL[:i]
	}
	if i := strings.IndexByte(lockURL, '?'); i >= 0 {
		lockURL, ref = lockURL[:i], lockURL[i+1:]
	}
	names := make([]string, 0, len(c.Sources))
	for n := range c.Sources {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s := c.Sources[n]
		switch {
		case s.Registry != "":
			r := s.Registry
			if !strings.HasPrefix(r, "sparse+") {
				r = "registry+" + r
			}
			if r == src {
				return n
			}
		case s.Git != "" && strings.HasPrefix(src, "git+"):
			want := ""
			switch {
			case s.Branch != "":
				want = "branch=" + s.Branch
			case s.Tag != "":
				want = "tag=" + s.Tag
			case s.Rev != "":
				want = "rev=" + s.Rev
			}
			if canonicalGit(strings.TrimPrefix(lockURL, "git+")) == canonicalGit(s.Git) && ref == want {
				return n
			}
		}
	}
	return ""
}

// tomlString quotes s as a TOML basic string (a JSON string is one).
func tomlString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// fetchConfig is the --config arguments that give the fetch (run in a copy
// of the project without its config) the project's registries and source
// replacements, with directories as absolute paths under projectDir.
func (c *Config) fetchConfig(projectDir string) []string {
	var out []string
	for _, n := range sortedKeys(c.Registries) {
		out = append(out, "--config", "registries."+n+".index="+tomlString(c.Registries[n]))
	}
	for _, n := range sortedKeys(c.Sources) {
		s := c.Sources[n]
		kv := func(k, v string) {
			if v != "" {
				out = append(out, "--config", "source."+tomlString(n)+"."+k+"="+tomlString(v))
			}
		}
		kv("replace-with", s.ReplaceWith)
		kv("registry", s.Registry)
		kv("git", s.Git)
		kv("branch", s.Branch)
		kv("tag", s.Tag)
		kv("rev", s.Rev)
		if s.Directory != "" {
			kv("directory", path.Join(projectDir, s.Directory))
		}
		if s.LocalRegistry != "" {
			kv("local-registry", path.Join(projectDir, s.LocalRegistry))
		}
	}
	return out
}

// dirs are the project directories the sources read (mounted read-only in
// the fetch sandbox).
func (c *Config) dirs() []string {
	var out []string
	for _, n := range sortedKeys(c.Sources) {
		s := c.Sources[n]
		for _, d := range []string{s.Directory, s.LocalRegistry} {
			if d != "" {
				out = append(out, d)
			}
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
