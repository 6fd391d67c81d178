package verify

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type tarEntry struct {
	name, link string
	typ        byte
	data       []byte
}

func makeTar(t testing.TB, gz bool, ents ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	var tw *tar.Writer
	var zw *gzip.Writer
	if gz {
		zw = gzip.NewWriter(&buf)
		tw = tar.NewWriter(zw)
	} else {
		tw = tar.NewWriter(&buf)
	}
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: 0o644, Size: int64(len(e.data))}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write(e.data)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if zw != nil {
		zw.Close()
	}
	return buf.Bytes()
}

// kexTar is the kex fixture as kettle's result tarballs hold it: under one
// top-level directory.
func kexTar(t testing.TB, top string, extra ...tarEntry) []byte {
	ents := []tarEntry{{name: top + "/", typ: tar.TypeDir}, {name: top + "/artifacts/", typ: tar.TypeDir}}
	for _, rel := range []string{ProvenanceFile, EvidenceFile, "artifacts/kex"} {
		ents = append(ents, tarEntry{name: top + "/" + rel, typ: tar.TypeReg, data: mustRead(t, filepath.Join(kexDir, rel))})
	}
	return makeTar(t, true, append(ents, extra...)...)
}

func verdicts(r *Report) string {
	var b strings.Builder
	for _, c := range r.Checks {
		b.WriteString(c.Name)
		if c.OK {
			b.WriteString(" PASSED\n")
		} else {
			b.WriteString(" FAILED\n")
		}
	}
	return b.String()
}

// The in-memory path gives the same rows as Bundle on the extracted
// directory, for every set of options the web page uses.
func TestBundleTarballMatchesBundle(t *testing.T) {
	tgz := kexTar(t, "kex")
	for _, tc := range []struct {
		name string
		opts []BundleOption
	}{
		{"nonce", []BundleOption{WithNonce(make([]byte, 16))}},
		{"wrong nonce", []BundleOption{WithNonce(bytes.Repeat([]byte{0xab}, 16))}},
		{"nonce insecure allowed", []BundleOption{WithNonce(make([]byte, 16)), WithAllowInsecureUnsafe()}},
		{"nothing expected", []BundleOption{anything}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := mustBundle(t, kexDir, tc.opts...)
			got, err := BundleTarball(context.Background(), bytes.NewReader(tgz), "kex.tar.gz", tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			if verdicts(got) != verdicts(want) {
				t.Fatalf("tarball:\n%s\ndirectory:\n%s", verdicts(got), verdicts(want))
			}
			if got.Passed() != want.Passed() || got.Dir != "kex.tar.gz" || got.BuildID != want.BuildID {
				t.Errorf("report header differs: %+v", got)
			}
		})
	}
}

func TestBundleTarballLayouts(t *testing.T) {
	plain := func(rel string) tarEntry {
		return tarEntry{name: rel, typ: tar.TypeReg, data: mustRead(t, filepath.Join(kexDir, rel))}
	}
	for name, tb := range map[string][]byte{
		"root, plain tar": makeTar(t, false, plain(ProvenanceFile), plain(EvidenceFile), plain("artifacts/kex")),
		"./ prefix":       kexTar(t, "."),
		"kettle-build/":   kexTar(t, "proj/kettle-build"),
		"hard-linked artifact": makeTar(t, true, plain(ProvenanceFile), plain(EvidenceFile),
			tarEntry{name: "kex", typ: tar.TypeReg, data: mustRead(t, filepath.Join(kexDir, "artifacts/kex"))},
			tarEntry{name: "artifacts/kex", typ: tar.TypeLink, link: "kex"}),
	} {
		t.Run(name, func(t *testing.T) {
			r, err := BundleTarball(context.Background(), bytes.NewReader(tb), "x", anything)
			if err != nil {
				t.Fatal(err)
			}
			if !r.Passed() {
				t.Fatalf("%s", verdicts(r))
			}
		})
	}
}

// A symlinked artifact fails its check in memory as on disk, and a link
// pointing out of the archive reads nothing of the machine's.
func TestBundleTarballSymlinks(t *testing.T) {
	for _, link := range []string{"/etc/passwd", "../../../etc/passwd", "../provenance.json"} {
		ents := []tarEntry{{name: "r/", typ: tar.TypeDir}}
		for _, rel := range []string{ProvenanceFile, EvidenceFile} {
			ents = append(ents, tarEntry{name: "r/" + rel, typ: tar.TypeReg, data: mustRead(t, filepath.Join(kexDir, rel))})
		}
		ents = append(ents, tarEntry{name: "r/artifacts/kex", typ: tar.TypeSymlink, link: link})
		r, err := BundleTarball(context.Background(), bytes.NewReader(makeTar(t, true, ents...)), "x", anything)
		if err != nil {
			t.Fatal(err)
		}
		if got := firstFailed(r); got != "Artifact `kex` matches its sha256" {
			t.Errorf("link to %s: first failed %q\n%s", link, got, verdicts(r))
		}
	}
}

func TestReadTarballRefuses(t *testing.T) {
	f := func(name string) tarEntry { return tarEntry{name: name, typ: tar.TypeReg, data: []byte("x")} }
	for name, tb := range map[string][]byte{
		"dotdot":            makeTar(t, true, f("a/../../b")),
		"absolute":          makeTar(t, true, f("/etc/passwd")),
		"backslash":         makeTar(t, true, f(`a\b`)),
		"twice":             makeTar(t, true, f("a"), f("a")),
		"device":            makeTar(t, true, tarEntry{name: "d", typ: tar.TypeChar}),
		"fifo":              makeTar(t, true, tarEntry{name: "d", typ: tar.TypeFifo}),
		"dangling hardlink": makeTar(t, true, tarEntry{name: "h", typ: tar.TypeLink, link: "nope"}),
		"file as parent":    makeTar(t, true, f("a"), f("a/b")),
		"link as parent":    makeTar(t, true, tarEntry{name: "a", typ: tar.TypeSymlink, link: "/"}, f("a/b")),
		"truncated":         makeTar(t, false, f("a"))[:300],
		"bad gzip":          {0x1f, 0x8b, 0, 0},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ReadTarball(bytes.NewReader(tb), 0); !errors.Is(err, ErrUnreadable) {
				t.Fatalf("err = %v, want ErrUnreadable", err)
			}
		})
	}
	big := makeTar(t, true, tarEntry{name: "a", typ: tar.TypeReg, data: make([]byte, 100)},
		tarEntry{name: "b", typ: tar.TypeLink, link: "a"})
	if _, err := ReadTarball(bytes.NewReader(big), 150); !errors.Is(err, ErrUnreadable) {
		t.Errorf("over the limit through a hard link: %v", err)
	}
	if _, err := ReadTarball(bytes.NewReader(big), 200); err != nil {
		t.Errorf("at the limit: %v", err)
	}
}

func TestBundleFSKettleBuild(t *testing.T) {
	fsys := os.DirFS(filepath.Dir(kexDir))
	sub, _ := fs.Sub(fsys, filepath.Base(kexDir))
	r, err := BundleFS(context.Background(), sub, "kex", WithNonce(make([]byte, 16)))
	if err != nil || !r.Passed() {
		t.Fatalf("%v\n%s", err, verdicts(r))
	}
	if _, err := BundleFS(context.Background(), sub, "kex"); !errors.Is(err, ErrOption) {
		t.Errorf("no expectation: %v", err)
	}
}

// FuzzReadTarball: arbitrary bytes never panic, and an accepted archive's
// tree verifies without error other than ErrUnreadable.
func FuzzReadTarball(f *testing.F) {
	f.Add(kexTar(f, "kex"))
	f.Add(makeTar(f, false, tarEntry{name: "a/", typ: tar.TypeDir}, tarEntry{name: "a/b", typ: tar.TypeSymlink, link: "../a"}))
	f.Add([]byte{0x1f, 0x8b})
	f.Fuzz(func(t *testing.T, b []byte) {
		fsys, err := ReadTarball(bytes.NewReader(b), 1<<20)
		if err != nil {
			if !errors.Is(err, ErrUnreadable) {
				t.Fatalf("error %v is not ErrUnreadable", err)
			}
			return
		}
		if _, err := BundleFS(context.Background(), fsys, "f", anything); err != nil && !errors.Is(err, ErrUnreadable) {
			t.Fatalf("BundleFS: %v", err)
		}
	})
}
