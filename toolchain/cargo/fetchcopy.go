package cargo

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
)

// writeFetchCopy lays out, under dst (a directory kettle creates outside the
// project), what `cargo fetch` needs of the project and nothing more: the
// Cargo.toml files kettle read and checked, Cargo.lock, and an empty file
// for each target source cargo looks for when it loads a manifest. No
// .cargo/config.toml, rust-toolchain.toml, build script or other project
// file is there, so nothing of the project can name a program for the
// fetch to run, whatever key of cargo's configuration it uses.
func (p *Project) writeFetchCopy(dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(dst)
	if err != nil {
		return err
	}
	defer root.Close()
	write := func(rel string, data []byte) error {
		if d := path.Dir(rel); d != "." {
			if err := root.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		f, err := root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		if _, err := f.Write(data); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}
	if err := write(LockfileName, p.LockData); err != nil {
		return fmt.Errorf("fetch copy: %w", err)
	}
	for _, d := range sortedKeys(p.manifests) {
		if err := write(path.Join(d, "Cargo.toml"), p.manifests[d]); err != nil {
			return fmt.Errorf("fetch copy: %w", err)
		}
	}
	stubs := make([]string, 0, len(p.stubs))
	for s := range p.stubs {
		stubs = append(stubs, s)
	}
	sort.Strings(stubs)
	for _, s := range stubs {
		if _, ok := p.manifests[path.Dir(s)]; ok && path.Base(s) == "Cargo.toml" {
			continue
		}
		if err := write(s, nil); err != nil && !os.IsExist(err) {
			return fmt.Errorf("fetch copy: %w", err)
		}
	}
	return nil
}

// within reports whether p is dir or below it (both clean, absolute).
func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !filepath.IsAbs(rel) && (rel == "." || !startsDotDot(rel))
}

func startsDotDot(rel string) bool {
	return len(rel) >= 3 && rel[:3] == ".."+string(filepath.Separator)
}
