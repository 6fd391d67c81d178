// Package buildcfg reads kettle.toml, the build configuration a project
// commits at its root: which subdirectory to build, which targets (Go
// packages, Cargo binaries, packages and features, a pnpm script), Go link
// flags stamped with the source's version, and the pnpm output mode.
//
// The file is part of the submission, so it is hostile input: it is parsed
// in this process through os.Root (never followed out of the project, at
// most MaxSize bytes), unknown keys are refused, every path it names must
// stay inside the project and every value is checked against a narrow
// alphabet before a toolchain sees it. It can only pick among what the
// toolchain's own build does: Go link flags are limited to `-X name=value`,
// `-s` and `-w` (no -toolexec, -exec, -extldflags or linker choice), Cargo
// gets --bin/--package/--features, pnpm runs one script of package.json
// (the build already runs the project's scripts). docs/toolchains.md
// documents the format.
package buildcfg

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/kettle-build/kettle/internal/lazyre"
)

// FileName is the configuration's name in the project root.
const FileName = "kettle.toml"

// MaxSize bounds kettle.toml.
const MaxSize = 64 << 10

// Limits on lists.
const (
	maxItems  = 64
	maxLen    = 200
	maxDepth  = 32
	maxDirLen = 1000
)

// Config is a parsed kettle.toml. Its JSON form is recorded in the
// provenance (internalParameters.buildConfig).
type Config struct {
	// Dir is the project's subdirectory to build ("" or absent: the
	// root), slash-separated and relative.
	Dir   string `toml:"dir" json:"dir,omitempty"`
	Go    *Go    `toml:"go" json:"go,omitempty"`
	Cargo *Cargo `toml:"cargo" json:"cargo,omitempty"`
	Pnpm  *Pnpm  `toml:"pnpm" json:"pnpm,omitempty"`
}

// Go configures the Go driver.
type Go struct {
	// Packages are the package patterns to build instead of ./...: "."
	// or "./dir", optionally ending in "/...".
	Packages []string `toml:"packages" json:"packages,omitempty"`
	// Ldflags are passed to `go build -ldflags`: each "-s", "-w" or
	// "-X importpath.name=value"; values may use {version} and {commit}.
	Ldflags []string `toml:"ldflags" json:"ldflags,omitempty"`
}

// Cargo configures the Cargo driver.
type Cargo struct {
	Bins              []string `toml:"bins" json:"bins,omitempty"`         // --bin
	Packages          []string `toml:"packages" json:"packages,omitempty"` // --package
	Features          []string `toml:"features" json:"features,omitempty"` // --features
	NoDefaultFeatures bool     `toml:"no_default_features" json:"noDefaultFeatures,omitempty"`
	AllFeatures       bool     `toml:"all_features" json:"allFeatures,omitempty"`
}

// Pnpm output modes.
const (
	OutputDist = "dist" // dist/ packed as dist.tar.gz (the default)
	OutputPack = "pack" // the `pnpm pack` tarball
)

// Pnpm configures the pnpm driver.
type Pnpm struct {
	Script string `toml:"script" json:"script,omitempty"` // package.json script to run instead of "build"
	Output string `toml:"output" json:"output,omitempty"` // "dist" or "pack"
}

// Error is a refusal of kettle.toml; its text is safe to show the client
// (it quotes only the file's own values, clipped).
type Error struct{ Msg string }

func (e *Error) Error() string { return FileName + ": " + e.Msg }

func errf(format string, args ...any) error { return &Error{Msg: fmt.Sprintf(format, args...)} }

// Load reads dir/kettle.toml through os.Root: nil, nil when there is none.
// A symlink, a non-regular file or one over MaxSize is refused.
func Load(dir string) (*Config, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open project: %w", err)
	}
	defer root.Close()
	fi, err := root.Lstat(FileName)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("stat %s: %w", FileName, err)
	case !fi.Mode().IsRegular():
		return nil, errf("not a regular file (a symlink or a directory); commit kettle.toml itself at the project root")
	case fi.Size() > MaxSize:
		return nil, errf("%d bytes, more than the %d allowed", fi.Size(), MaxSize)
	}
	// O_NOFOLLOW | O_NONBLOCK: the entry may have been swapped since the
	// Lstat; a FIFO must not block, a link must not be followed.
	f, err := root.OpenFile(FileName, os.O_RDONLY|noFollow, 0)
	if err != nil {
		return nil, errf("cannot be opened as a regular file")
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, errf("not a regular file")
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", FileName, err)
	}
	if len(data) > MaxSize {
		return nil, errf("more than %d bytes", MaxSize)
	}
	return Parse(data)
}

// Parse parses and checks kettle.toml.
func Parse(data []byte) (*Config, error) {
	if len(data) > MaxSize {
		return nil, errf("more than %d bytes", MaxSize)
	}
	var c Config
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		var strict *toml.StrictMissingError
		if errors.As(err, &strict) {
			var keys []string
			for _, e := range strict.Errors {
				keys = append(keys, strings.Join(e.Key(), "."))
			}
			return nil, errf("unknown key %s (known: dir, [go] packages/ldflags, [cargo] bins/packages/features/no_default_features/all_features, [pnpm] script/output)",
				clip(strings.Join(keys, ", ")))
		}
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return nil, errf("line %d column %d: %s", row, col, clip(de.Error()))
		}
		return nil, errf("%s", clip(err.Error()))
	}
	if err := c.check(); err != nil {
		return nil, err
	}
	return &c, nil
}

var (
	pathElem    = lazyre.New(`^[A-Za-z0-9_][A-Za-z0-9._+-]*$`)
	crateName   = lazyre.New(`^[A-Za-z0-9_][A-Za-z0-9_-]*$`)
	featureName = lazyre.New(`^[A-Za-z0-9_][A-Za-z0-9_+.-]*(/[A-Za-z0-9_][A-Za-z0-9_+.-]*)?$`)
	scriptName  = lazyre.New(`^[A-Za-z0-9_][A-Za-z0-9_:.-]*$`)
	// -X importpath.name=value: importpath of a Go package, name an
	// identifier, value from a small alphabet (no spaces or quotes: go
	// splits -ldflags on them) with {placeholders}.
	xName  = lazyre.New(`^[A-Za-z0-9_][A-Za-z0-9_./~-]*\.[A-Za-z_][A-Za-z0-9_]*$`)
	xValue = lazyre.New(`^[A-Za-z0-9_.,:/@+~{}-]*$`)
	holder = lazyre.New(`\{[^}]*\}`)
)

func (c *Config) check() error {
	if c.Dir != "" {
		if err := checkPath(c.Dir, false); err != nil {
			return errf("dir %s: %v", quote(c.Dir), err)
		}
	}
	if g := c.Go; g != nil {
		if len(g.Packages) > maxItems || len(g.Ldflags) > maxItems {
			return errf("[go] lists hold at most %d entries", maxItems)
		}
		for _, p := range g.Packages {
			if err := checkPattern(p); err != nil {
				return errf("[go] packages %s: %v", quote(p), err)
			}
		}
		for _, f := range g.Ldflags {
			if err := checkLdflag(f); err != nil {
				return errf("[go] ldflags %s: %v", quote(f), err)
			}
		}
	}
	if k := c.Cargo; k != nil {
		if len(k.Bins) > maxItems || len(k.Packages) > maxItems || len(k.Features) > maxItems {
			return errf("[cargo] lists hold at most %d entries", maxItems)
		}
		for _, b := range k.Bins {
			if len(b) > maxLen || !crateName.MatchString(b) {
				return errf("[cargo] bins %s: not a binary target name", quote(b))
			}
		}
		for _, p := range k.Packages {
			if len(p) > maxLen || !crateName.MatchString(p) {
				return errf("[cargo] packages %s: not a package name", quote(p))
			}
		}
		for _, f := range k.Features {
			if len(f) > maxLen || !featureName.MatchString(f) {
				return errf("[cargo] features %s: not a feature name (name or package/name)", quote(f))
			}
		}
		if k.AllFeatures && (k.NoDefaultFeatures || len(k.Features) > 0) {
			return errf("[cargo] all_features excludes features and no_default_features")
		}
	}
	if p := c.Pnpm; p != nil {
		if p.Script != "" && (len(p.Script) > maxLen || !scriptName.MatchString(p.Script)) {
			return errf("[pnpm] script %s: not a package.json script name", quote(p.Script))
		}
		switch p.Output {
		case "", OutputDist, OutputPack:
		default:
			return errf("[pnpm] output %s: must be %q or %q", quote(p.Output), OutputDist, OutputPack)
		}
	}
	return nil
}

// checkPath accepts a relative slash path of safe names without "." or
// ".." elements; with pattern, a final "..." element is allowed.
func checkPath(p string, pattern bool) error {
	if len(p) > maxDirLen {
		return errors.New("too long")
	}
	if strings.HasPrefix(p, "/") || strings.Contains(p, `\`) {
		return errors.New("must be relative to the project root")
	}
	elems := strings.Split(strings.TrimSuffix(p, "/"), "/")
	if len(elems) > maxDepth {
		return errors.New("too deep")
	}
	for i, e := range elems {
		if pattern && e == "..." && i == len(elems)-1 {
			continue
		}
		switch {
		case e == "..":
			return errors.New("names a path outside the project")
		case e == "." || e == "":
			return errors.New("has an empty or \".\" element")
		case !pathElem.MatchString(e):
			return fmt.Errorf("element %s has characters other than letters, digits, . _ + -", quote(e))
		}
	}
	return nil
}

// checkPattern accepts ".", "./..." and "./dir[/...]".
func checkPattern(p string) error {
	switch {
	case p == "." || p == "./...":
		return nil
	case !strings.HasPrefix(p, "./"):
		return errors.New(`must be "." or start with "./" (a directory of the project)`)
	}
	return checkPath(p[2:], true)
}

func checkLdflag(f string) error {
	switch f {
	case "-s", "-w", "-s -w":
		return nil
	}
	rest, ok := strings.CutPrefix(f, "-X ")
	if !ok {
		return errors.New(`only "-s", "-w" and "-X importpath.name=value" are allowed`)
	}
	name, val, ok := strings.Cut(strings.TrimLeft(rest, " "), "=")
	if !ok || len(name) > maxLen || !xName.MatchString(name) {
		return errors.New("-X needs importpath.name=value")
	}
	if len(val) > maxLen || !xValue.MatchString(val) {
		return errors.New("the value may hold letters, digits, . , : / @ + ~ - _ and {version} or {commit}")
	}
	for _, h := range holder.FindAllString(val, -1) {
		if h != "{version}" && h != "{commit}" {
			return fmt.Errorf("unknown placeholder %s (known: {version}, {commit})", h)
		}
	}
	if strings.ContainsAny(holder.ReplaceAllString(val, ""), "{}") {
		return errors.New("unbalanced braces")
	}
	return nil
}

// Stamp is the source's identity that ldflags may use.
type Stamp struct {
	Version string // the tag at the source's commit (git describe --tags --exact-match), else the commit
	Commit  string // the full commit hash
}

var stampValue = lazyre.New(`^[A-Za-z0-9_.,:/@+~-]{1,200}$`)

// UsesStamp reports whether the ldflags use {version} or {commit}.
func (g *Go) UsesStamp() bool {
	for _, f := range g.Ldflags {
		if strings.Contains(f, "{version}") || strings.Contains(f, "{commit}") {
			return true
		}
	}
	return false
}

// LdflagsArg is the value of `go build -ldflags=` with the placeholders
// filled in from s; "" when there are no ldflags. A stamp value outside the
// -X value alphabet (a tag named with other characters) is an error.
func (g *Go) LdflagsArg(s Stamp) (string, error) {
	if len(g.Ldflags) == 0 {
		return "", nil
	}
	if g.UsesStamp() {
		if !stampValue.MatchString(s.Commit) {
			return "", errf("[go] ldflags use {version} or {commit} but the source has no git commit: submit a git repository or a checkout with its .git, without uncommitted changes")
		}
		if !stampValue.MatchString(s.Version) {
			return "", errf("[go] ldflags use {version} but the tag at the commit has characters -X values cannot hold")
		}
	}
	r := strings.NewReplacer("{version}", s.Version, "{commit}", s.Commit)
	var parts []string
	for _, f := range g.Ldflags {
		if rest, ok := strings.CutPrefix(f, "-X "); ok {
			parts = append(parts, "-X", r.Replace(strings.TrimLeft(rest, " ")))
		} else {
			parts = append(parts, strings.Fields(f)...)
		}
	}
	return strings.Join(parts, " "), nil
}

// OtherSection returns the name of a toolchain section present other than
// driver's, for refusing a configuration meant for another toolchain.
func (c *Config) OtherSection(driver string) string {
	for _, s := range []struct {
		name    string
		present bool
	}{{"go", c.Go != nil}, {"cargo", c.Cargo != nil}, {"pnpm", c.Pnpm != nil}} {
		if s.present && s.name != driver {
			return s.name
		}
	}
	return ""
}

func quote(s string) string { return fmt.Sprintf("%q", clip(s)) }

func clip(s string) string {
	if len(s) > 120 {
		return s[:120] + "…"
	}
	return s
}

// ProjectDir returns the directory of the project to build: root itself,
// or root/c.Dir after checking through os.Root that every component of
// c.Dir is a real directory (a symlink at any component is refused, not
// followed).
func (c *Config) ProjectDir(root string) (string, error) {
	if c == nil || c.Dir == "" {
		return root, nil
	}
	if err := realDir(root, strings.TrimSuffix(c.Dir, "/")); err != nil {
		var ce *Error
		if errors.As(err, &ce) {
			return "", err
		}
		return "", errf("dir %s: %v", quote(c.Dir), err)
	}
	return filepath.Join(root, filepath.FromSlash(c.Dir)), nil
}

// CheckPaths checks, against the project directory proj (after Dir), that
// every directory the configuration names is a real directory of the
// project: no component is a symlink (which the toolchain would follow)
// or missing.
func (c *Config) CheckPaths(proj string) error {
	if c == nil || c.Go == nil {
		return nil
	}
	for _, p := range c.Go.Packages {
		rel := strings.TrimSuffix(strings.TrimPrefix(p, "./"), "...")
		rel = strings.TrimSuffix(rel, "/")
		if rel == "" || rel == "." {
			continue
		}
		if err := realDir(proj, rel); err != nil {
			return errf("[go] packages %s: %v", quote(p), err)
		}
	}
	return nil
}

// realDir walks rel under root through os.Root, refusing a symlink, a
// missing entry or a non-directory at any component.
func realDir(root, rel string) error {
	r, err := os.OpenRoot(root)
	if err != nil {
		return errors.New("the project cannot be opened")
	}
	defer r.Close()
	cur := ""
	for _, e := range strings.Split(rel, "/") {
		cur = path.Join(cur, e)
		fi, err := r.Lstat(cur)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("%s does not exist in the source", quote(cur))
		case err != nil:
			return fmt.Errorf("%s cannot be read", quote(cur))
		case fi.Mode()&fs.ModeSymlink != 0:
			return fmt.Errorf("%s is a symlink; name the real directory", quote(cur))
		case !fi.IsDir():
			return fmt.Errorf("%s is not a directory", quote(cur))
		}
	}
	return nil
}

// Args are the cargo build options of the [cargo] section, each one
// argument of the form --flag or --flag=value; nil for none.
func (k *Cargo) Args() []string {
	if k == nil {
		return nil
	}
	var a []string
	for _, p := range k.Packages {
		a = append(a, "--package="+p)
	}
	for _, b := range k.Bins {
		a = append(a, "--bin="+b)
	}
	if len(k.Features) > 0 {
		a = append(a, "--features="+strings.Join(k.Features, ","))
	}
	if k.NoDefaultFeatures {
		a = append(a, "--no-default-features")
	}
	if k.AllFeatures {
		a = append(a, "--all-features")
	}
	return a
}
