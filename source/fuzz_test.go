package source

import (
	"archive/tar"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kettle-build/kettle/failure"
)

func addCorpusSeeds(f *testing.F, suffix string) {
	ents, _ := os.ReadDir(corpusDir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), suffix) {
			if b, err := os.ReadFile(filepath.Join(corpusDir, e.Name())); err == nil {
				f.Add(b)
			}
		}
	}
}

// fuzzExtract extracts data and checks the invariants: a refusal is a
// client-safe InvalidSource failure without server paths, and whatever was
// accepted lies inside the work dir, with every symlink resolving inside.
func fuzzExtract(t *testing.T, data []byte) {
	base := fuzzTempDir(t)
	work := filepath.Join(base, "work")
	os.Mkdir(work, 0o755)
	archive := filepath.Join(base, "upload")
	if err := os.WriteFile(archive, data, 0o600); err != nil {
		t.Fatal(err)
	}
	tree, err := Extract(context.Background(), archive, work, Limits{MaxBytes: 8 << 20, MaxEntries: 1000})
	ents, _ := os.ReadDir(base)
	if len(ents) != 2 {
		t.Fatalf("something was written beside the work dir: %v", ents)
	}
	if err != nil {
		var fe *failure.Error
		if !errors.As(err, &fe) || fe.Kind != failure.InvalidSource {
			t.Fatalf("unclassified error: %v", err)
		}
		if strings.Contains(fe.Error(), base) {
			t.Fatalf("message names a server path: %q", fe.Error())
		}
		if ents, _ := os.ReadDir(work); len(ents) != 0 {
			t.Fatalf("refused archive left %v", ents)
		}
		return
	}
	if !strings.HasPrefix(tree.Dir, work+string(filepath.Separator)) {
		t.Fatalf("tree dir %s outside %s", tree.Dir, work)
	}
	filepath.WalkDir(work, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if d.Type()&fs.ModeSymlink != 0 {
			real, err := filepath.EvalSymlinks(p)
			if err == nil && !strings.HasPrefix(real, work+string(filepath.Separator)) {
				t.Fatalf("symlink %s resolves to %s", p, real)
			}
		} else if !d.IsDir() && !d.Type().IsRegular() {
			t.Fatalf("special file %s", p)
		}
		return nil
	})
}

// fuzzTempDir prefers tmpfs: extraction is syscall-bound, and a disk
// shared with other jobs slows fuzzing tenfold.
func fuzzTempDir(t *testing.T) string {
	d, err := os.MkdirTemp("/dev/shm", "kettle-fuzz-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func FuzzExtractZip(f *testing.F) {
	addCorpusSeeds(f, ".zip")
	f.Add(zipOf(f, zent{name: "p/", mode: fs.ModeDir | 0o755}, zent{name: "p/a", body: "x", mode: 0o755}, zent{name: "p/l", body: "a", mode: fs.ModeSymlink | 0o777}))
	f.Fuzz(fuzzExtract)
}

func FuzzExtractTar(f *testing.F) {
	addCorpusSeeds(f, ".tar.gz")
	f.Add(tgzOf(f, tent{name: "p/", typ: tar.TypeDir, mode: 0o755}, tent{name: "p/a", body: "x", mode: 0o755}, tent{name: "p/l", typ: tar.TypeSymlink, link: "a"}))
	f.Fuzz(fuzzExtract)
}
