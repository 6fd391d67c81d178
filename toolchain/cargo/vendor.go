package cargo

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// checksumFile is the file cargo vendor writes into each vendored crate.
const checksumFile = ".cargo-checksum.json"

// Vendored is a Cargo.lock package that cargo reads from a vendored
// directory source (`[source.crates-io] replace-with = "vendored-sources"`,
// `[source.vendored-sources] directory = "vendor"`), checked file by file.
type Vendored struct {
	Dir  string // the crate's directory, project-relative
	Name string
	// H1 is the tree digest of Dir (see TreeH1).
	H1 string
}

// lockKey identifies a Cargo.lock package.
func lockKey(p Package) string { return p.Name + " " + p.Version + " " + p.Source }

// vendorIndex reads the crates of a directory source: every subdirectory
// with a Cargo.toml, by "name version" (what cargo's directory source
// does).
func vendorIndex(root *os.Root, dir string) (map[string]string, error) {
	ents, err := readDir(root, dir)
	if err != nil {
		return nil, refuse("vendored source %s cannot be listed inside the project", clip(dir))
	}
	idx := map[string]string{}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		d := path.Join(dir, e.Name())
		data, err := readFile(root, path.Join(d, "Cargo.toml"), maxManifestBytes)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, refuse("%s/Cargo.toml cannot be read inside the project", clip(d))
		}
		var m struct {
			Package struct {
				Name    string `toml:"name"`
				Version string `toml:"version"`
			} `toml:"package"`
		}
		if err := toml.Unmarshal(data, &m); err != nil || m.Package.Name == "" || m.Package.Version == "" {
			return nil, refuse("%s/Cargo.toml has no literal package name and version (not a crate written by cargo vendor)", clip(d))
		}
		k := m.Package.Name + " " + m.Package.Version
		if idx[k] != "" {
			return nil, refuse("vendored source %s holds %s@%s twice", clip(dir), clip(m.Package.Name), clip(m.Package.Version))
		}
		idx[k] = d
	}
	return idx, nil
}

// checkVendored finds the Cargo.lock packages that cargo reads from a
// vendored directory and checks each: every file of the crate must be
// listed in its .cargo-checksum.json with its sha256 (no file missing, none
// extra, no symlink or special file), the map must not be empty, and its
// "package" checksum must be Cargo.lock's (null for a git package).
// Anything else is refused. Such a crate is recorded as local code (its
// tree digest): the file list is the vendor's own claim, and without the
// .crate archive nothing ties the files to the registry's checksum.
func (p *Project) checkVendored(root *os.Root) (map[string]*Vendored, error) {
	c := p.Config
	indexes := map[string]map[string]string{}
	for _, n := range sortedKeys(c.Sources) {
		if d := c.Sources[n].Directory; d != "" && indexes[d] == nil {
			idx, err := vendorIndex(root, d)
			if err != nil {
				return nil, err
			}
			indexes[d] = idx
		}
	}
	out := map[string]*Vendored{}
	for _, pk := range p.Lock.Package {
		if pk.Source == "" {
			continue
		}
		id := pk.Name + "@" + pk.Version
		var target *Source
		if n := c.sourceName(pk.Source); n != "" {
			var err error
			if target, err = c.resolve(n); err != nil {
				return nil, refuse("%v", err)
			}
		}
		if target == nil || target.Directory == "" {
			// Not vendored as far as kettle can tell; a vendored copy of
			// the same crate would mean kettle and cargo disagree.
			for d, idx := range indexes {
				if idx[pk.Name+" "+pk.Version] != "" && target == nil {
					return nil, refuse("%s from %s has a copy in the vendored source %s, but kettle cannot tell whether cargo replaces its source with it", clip(id), clip(pk.Source), clip(d))
				}
			}
			continue
		}
		dir := indexes[target.Directory][pk.Name+" "+pk.Version]
		if dir == "" {
			return nil, refuse("%s is replaced by the vendored source %s, which does not hold it", clip(id), clip(target.Directory))
		}
		if err := verifyVendored(root, dir, pk); err != nil {
			return nil, err
		}
		h1, err := TreeH1(root, dir)
		if err != nil {
			return nil, refuse("vendored crate %s cannot be hashed: %v", clip(dir), err)
		}
		out[lockKey(pk)] = &Vendored{Dir: dir, Name: pk.Name, H1: h1}
	}
	return out, nil
}

// verifyVendored checks one vendored crate against its .cargo-checksum.json
// and the Cargo.lock package it stands for.
func verifyVendored(root *os.Root, dir string, pk Package) error {
	id := pk.Name + "@" + pk.Version
	data, err := readFile(root, path.Join(dir, checksumFile), maxManifestBytes)
	if err != nil {
		return refuse("vendored crate %s (%s) has no readable %s", clip(dir), clip(id), checksumFile)
	}
	sums, pkgSum, err := parseChecksumJSON(data)
	if err != nil {
		return refuse("vendored crate %s (%s): %v", clip(dir), clip(id), err)
	}
	if len(sums) == 0 {
		return refuse("vendored crate %s (%s): %s lists no files, so nothing of it is checked", clip(dir), clip(id), checksumFile)
	}
	switch {
	case pk.Checksum != "" && pkgSum != pk.Checksum:
		return refuse("vendored crate %s (%s): its package checksum is not the one Cargo.lock pins", clip(dir), clip(id))
	case pk.Checksum == "" && pkgSum != "":
		return refuse("vendored crate %s (%s): it has a package checksum, but Cargo.lock pins none", clip(dir), clip(id))
	}
	seen := map[string]bool{}
	err = fs.WalkDir(root.FS(), dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(p, dir+"/")
		if d.IsDir() {
			return nil
		}
		if !d.Type().IsRegular() {
			return refuse("vendored crate %s (%s): %s is not a regular file", clip(dir), clip(id), clip(rel))
		}
		if p == path.Join(dir, checksumFile) {
			return nil
		}
		want, ok := sums[rel]
		if !ok {
			return refuse("vendored crate %s (%s): %s is not listed in %s", clip(dir), clip(id), clip(rel), checksumFile)
		}
		got, err := sha256Root(root, p)
		if err != nil {
			return err
		}
		if got != want {
			return refuse("vendored crate %s (%s): %s does not match its checksum in %s", clip(dir), clip(id), clip(rel), checksumFile)
		}
		seen[rel] = true
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrProject) {
			return err
		}
		return refuse("vendored crate %s (%s) cannot be read inside the project", clip(dir), clip(id))
	}
	if len(seen) != len(sums) {
		missing := make([]string, 0)
		for f := range sums {
			if !seen[f] {
				missing = append(missing, f)
			}
		}
		sort.Strings(missing)
		return refuse("vendored crate %s (%s): %s lists %s, which is missing", clip(dir), clip(id), checksumFile, clip(missing[0]))
	}
	return nil
}

// parseChecksumJSON parses a .cargo-checksum.json: {"files": {name: hex},
// "package": hex or null}. Names are slash paths relative to the crate.
func parseChecksumJSON(data []byte) (map[string]string, string, error) {
	var v struct {
		Files   map[string]string `json:"files"`
		Package *string           `json:"package"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, "", errors.New(checksumFile + " is not valid JSON of the form cargo vendor writes")
	}
	for name, sum := range v.Files {
		if !hex64.MatchString(sum) {
			return nil, "", errors.New(checksumFile + " has a malformed file checksum")
		}
		if name == "" || path.Clean(name) != name || path.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return nil, "", errors.New(checksumFile + " lists a file name that is not a clean relative path")
		}
	}
	pkg := ""
	if v.Package != nil {
		pkg = *v.Package
		if !hex64.MatchString(pkg) {
			return nil, "", errors.New(checksumFile + " has a malformed package checksum")
		}
	}
	return v.Files, pkg, nil
}

func sha256Root(root *os.Root, name string) (string, error) {
	f, err := openRegular(root, name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return "", refuse("%s is not a regular file", clip(name))
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
