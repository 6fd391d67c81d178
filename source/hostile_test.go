package source

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/kettle-build/kettle/failure"
)

var update = flag.Bool("update", false, "regenerate testdata/hostile")

// corpusDir is the repository's hostile corpus (shared with the api tests).
var corpusDir = filepath.Join("..", "testdata", "hostile", "archives")

// hostileCase is one archive of the corpus and the refusal it must get.
type hostileCase struct {
	file  string
	build func(t testing.TB) []byte
	lim   Limits
	want  error  // sentinel
	msg   string // substring of the client message
}

func hostileCases() []hostileCase {
	good := func(t testing.TB) []byte {
		return zipOf(t, zent{name: "p/a.txt", body: "alpha"}, zent{name: "p/b.txt", body: "bravo"})
	}
	goodTar := func(t testing.TB) []byte {
		return tgzOf(t, tent{name: "p/a.txt", body: strings.Repeat("alpha ", 2000)}, tent{name: "p/b.txt", body: "bravo"})
	}
	return []hostileCase{
		// ZIP
		{"zip-absolute-path.zip", func(t testing.TB) []byte { return zipOf(t, zent{name: "/tmp/kettle-evil", body: "x"}) }, Limits{}, ErrUnsafePath, "absolute paths are not allowed"},
		{"zip-dotdot.zip", func(t testing.TB) []byte { return zipOf(t, zent{name: "a/../../kettle-evil", body: "x"}) }, Limits{}, ErrUnsafePath, "'..' is not allowed"},
		{"zip-backslash.zip", func(t testing.TB) []byte { return zipOf(t, zent{name: `..\..\kettle-evil`, body: "x"}) }, Limits{}, ErrUnsafePath, "backslashes"},
		{"zip-symlink-escape.zip", func(t testing.TB) []byte {
			return zipOf(t, zent{name: "p/l", body: "../../..", mode: fs.ModeSymlink | 0o777})
		}, Limits{}, ErrUnsafeLink, "points outside the source tree"},
		{"zip-symlink-absolute.zip", func(t testing.TB) []byte {
			return zipOf(t, zent{name: "l", body: "/etc/passwd", mode: fs.ModeSymlink | 0o777})
		}, Limits{}, ErrUnsafeLink, "absolute path"},
		{"zip-symlink-write-through.zip", func(t testing.TB) []byte {
			return zipOf(t, zent{name: "sub/", mode: fs.ModeDir | 0o755}, zent{name: "l", body: "sub", mode: fs.ModeSymlink | 0o777}, zent{name: "l/evil", body: "x"})
		}, Limits{}, ErrUnsafeLink, "written through the symlink"},
		{"zip-symlink-chain-escape.zip", func(t testing.TB) []byte {
			return zipOf(t, zent{name: "s", body: ".", mode: fs.ModeSymlink | 0o777}, zent{name: "e", body: "s/..", mode: fs.ModeSymlink | 0o777})
		}, Limits{}, ErrUnsafeLink, "resolves outside the source tree"},
		{"zip-fifo.zip", func(t testing.TB) []byte { return zipOf(t, zent{name: "fifo", mode: fs.ModeNamedPipe | 0o644}) }, Limits{}, ErrSpecialFile, "device, FIFO"},
		{"zip-device.zip", func(t testing.TB) []byte {
			return zipOf(t, zent{name: "null", mode: fs.ModeDevice | fs.ModeCharDevice | 0o666})
		}, Limits{}, ErrSpecialFile, "device, FIFO"},
		{"zip-duplicate.zip", func(t testing.TB) []byte {
			return zipOf(t, zent{name: "a.txt", body: "one"}, zent{name: "./a.txt", body: "two"})
		}, Limits{}, ErrDuplicate, "duplicate path"},
		{"zip-bomb-ratio.zip", func(t testing.TB) []byte { return zipOf(t, zent{name: "zeros", size: 16 << 20}) }, Limits{}, ErrRatio, "zip bomb"},
		{"zip-too-many-entries.zip", func(t testing.TB) []byte {
			var ents []zent
			for i := range 101 {
				ents = append(ents, zent{name: "f" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + "/" + itoa(i), body: "x"})
			}
			return zipOf(t, ents...)
		}, Limits{MaxEntries: 100}, ErrTooManyEntries, "more than 100 entries"},
		{"zip-lying-count.zip", func(t testing.TB) []byte {
			// The end record claims 5 entries; archive/zip would still load
			// all 101 central records before noticing.
			var ents []zent
			for i := range 101 {
				ents = append(ents, zent{name: "f" + itoa(i), body: "x"})
			}
			z := zipOf(t, ents...)
			eocd := bytes.LastIndex(z, []byte("PK\x05\x06"))
			binary.LittleEndian.PutUint16(z[eocd+8:], 5)
			binary.LittleEndian.PutUint16(z[eocd+10:], 5)
			return z
		}, Limits{MaxEntries: 100}, ErrTooManyEntries, "more than 100 entries"},
		{"zip-total-size.zip", func(t testing.TB) []byte {
			return zipOf(t, zent{name: "a", body: strings.Repeat("a", 700<<10), method: zip.Store}, zent{name: "b", body: strings.Repeat("b", 700<<10), method: zip.Store})
		}, Limits{MaxBytes: 1 << 20}, ErrTooLarge, "more than 1048576 bytes"},
		{"zip-truncated.zip", func(t testing.TB) []byte { z := good(t); return z[:len(z)/2] }, Limits{}, ErrCorrupt, "not a valid ZIP"},
		{"zip-lying-cd-overlap.zip", func(t testing.TB) []byte {
			z := good(t)
			var first []byte
			return zipCD(z, func(i int, rec []byte) {
				if i == 0 {
					first = rec[42:46]
				} else {
					copy(rec[42:46], first)
				}
			})
		}, Limits{}, ErrCorrupt, "lying central directory"},
		{"zip-lying-cd-size.zip", func(t testing.TB) []byte {
			z := zipOf(t, zent{name: "a.txt", body: "0123456789", method: zip.Store})
			return zipCD(z, func(i int, rec []byte) { binary.LittleEndian.PutUint32(rec[24:], 4) })
		}, Limits{}, ErrCorrupt, "does not match the central directory"},
		{"zip-lying-cd-crc.zip", func(t testing.TB) []byte {
			return zipCD(good(t), func(i int, rec []byte) { rec[16] ^= 0xff })
		}, Limits{}, ErrCorrupt, "does not match the central directory"},
		{"zip-lying-cd-offset.zip", func(t testing.TB) []byte {
			return zipCD(good(t), func(i int, rec []byte) { binary.LittleEndian.PutUint32(rec[42:], 0x7fffff00) })
		}, Limits{}, ErrCorrupt, "ZIP"},
		{"zip-encrypted.zip", func(t testing.TB) []byte {
			return zipCD(good(t), func(i int, rec []byte) { rec[8] |= 1 })
		}, Limits{}, ErrUnsupported, "encrypted"},
		// gzip tar
		{"tar-absolute-path.tar.gz", func(t testing.TB) []byte { return tgzOf(t, tent{name: "/tmp/kettle-evil", body: "x"}) }, Limits{}, ErrUnsafePath, "absolute paths"},
		{"tar-dotdot.tar.gz", func(t testing.TB) []byte { return tgzOf(t, tent{name: "p/../../kettle-evil", body: "x"}) }, Limits{}, ErrUnsafePath, "'..' is not allowed"},
		{"tar-control-char.tar.gz", func(t testing.TB) []byte { return tgzOf(t, tent{name: "a\nb", body: "x"}) }, Limits{}, ErrUnsafePath, "control characters"},
		{"tar-symlink-escape.tar.gz", func(t testing.TB) []byte {
			return tgzOf(t, tent{name: "p/etc", typ: tar.TypeSymlink, link: "../../../etc"})
		}, Limits{}, ErrUnsafeLink, "points outside the source tree"},
		{"tar-symlink-absolute.tar.gz", func(t testing.TB) []byte {
			return tgzOf(t, tent{name: "passwd", typ: tar.TypeSymlink, link: "/etc/passwd"})
		}, Limits{}, ErrUnsafeLink, "absolute path"},
		{"tar-symlink-write-through.tar.gz", func(t testing.TB) []byte {
			return tgzOf(t, tent{name: "d/", typ: tar.TypeDir, mode: 0o755}, tent{name: "l", typ: tar.TypeSymlink, link: "d"}, tent{name: "l/evil", body: "x"})
		}, Limits{}, ErrUnsafeLink, "written through the symlink"},
		{"tar-symlink-then-file-escape.tar.gz", func(t testing.TB) []byte {
			return tgzOf(t, tent{name: "l", typ: tar.TypeSymlink, link: "../.."}, tent{name: "l/kettle-evil", body: "x"})
		}, Limits{}, ErrUnsafeLink, "points outside the source tree"},
		{"tar-symlink-chain-escape.tar.gz", func(t testing.TB) []byte {
			return tgzOf(t, tent{name: "s", typ: tar.TypeSymlink, link: "."}, tent{name: "e", typ: tar.TypeSymlink, link: "s/../kettle-canary"})
		}, Limits{}, ErrUnsafeLink, "resolves outside the source tree"},
		{"tar-hardlink.tar.gz", func(t testing.TB) []byte {
			return tgzOf(t, tent{name: "a.txt", body: "x"}, tent{name: "b.txt", typ: tar.TypeLink, link: "a.txt"})
		}, Limits{}, ErrUnsafeLink, "hard link"},
		{"tar-hardlink-outside.tar.gz", func(t testing.TB) []byte {
			return tgzOf(t, tent{name: "passwd", typ: tar.TypeLink, link: "/etc/passwd"})
		}, Limits{}, ErrUnsafeLink, "hard link"},
		{"tar-chardev.tar.gz", func(t testing.TB) []byte { return tgzOf(t, tent{name: "null", typ: tar.TypeChar}) }, Limits{}, ErrSpecialFile, "device or FIFO"},
		{"tar-blockdev.tar.gz", func(t testing.TB) []byte { return tgzOf(t, tent{name: "sda", typ: tar.TypeBlock}) }, Limits{}, ErrSpecialFile, "device or FIFO"},
		{"tar-fifo.tar.gz", func(t testing.TB) []byte { return tgzOf(t, tent{name: "fifo", typ: tar.TypeFifo}) }, Limits{}, ErrSpecialFile, "device or FIFO"},
		{"tar-duplicate.tar.gz", func(t testing.TB) []byte {
			return tgzOf(t, tent{name: "p/a.txt", body: "one"}, tent{name: "p/a.txt", body: "two"})
		}, Limits{}, ErrDuplicate, "duplicate path"},
		{"tar-duplicate-kind.tar.gz", func(t testing.TB) []byte {
			return tgzOf(t, tent{name: "a", body: "file"}, tent{name: "a/", typ: tar.TypeDir, mode: 0o755})
		}, Limits{}, ErrDuplicate, "duplicate path"},
		{"tar-bomb-declared-size.tar.gz", func(t testing.TB) []byte {
			return tgzOf(t, tent{name: "huge", size: 1 << 20, declared: 100 << 30})
		}, Limits{}, ErrTooLarge, "declares 107374182400 bytes"},
		{"tar-bomb-total-size.tar.gz", func(t testing.TB) []byte {
			return tgzOf(t, tent{name: "a", size: 512 << 10}, tent{name: "b", size: 512 << 10}, tent{name: "c", size: 512 << 10})
		}, Limits{MaxBytes: 1 << 20, MaxRatio: 1e9}, ErrTooLarge, "may not unpack to more than 1048576 bytes"},
		{"tar-bomb-ratio.tar.gz", func(t testing.TB) []byte { return tgzOf(t, tent{name: "zeros", size: 64 << 20}) }, Limits{}, ErrRatio, "gzip bomb"},
		{"tar-too-many-entries.tar.gz", func(t testing.TB) []byte {
			var ents []tent
			for i := range 101 {
				ents = append(ents, tent{name: "f" + itoa(i), body: "x"})
			}
			return tgzOf(t, ents...)
		}, Limits{MaxEntries: 100}, ErrTooManyEntries, "more than 100 entries"},
		{"tgz-corrupt-deflate.tar.gz", func(t testing.TB) []byte {
			z := goodTar(t)
			z[len(z)/2] ^= 0x55
			z[len(z)/2+1] ^= 0xaa
			return z
		}, Limits{}, ErrCorrupt, ""},
		{"tgz-bad-crc.tar.gz", func(t testing.TB) []byte {
			z := goodTar(t)
			z[len(z)-8] ^= 0xff
			return z
		}, Limits{}, ErrCorrupt, "gzip stream is corrupt"},
		{"tgz-bad-header.tar.gz", func(t testing.TB) []byte { return []byte{0x1f, 0x8b, 0x99, 0, 0, 0, 0, 0, 0, 0} }, Limits{}, ErrCorrupt, "not a valid gzip stream"},
		{"tgz-truncated.tar.gz", func(t testing.TB) []byte { z := goodTar(t); return z[:len(z)*2/3] }, Limits{}, ErrCorrupt, "truncated"},
		// .git holds only directories and regular files (host-rce-gitconfig-symlink-archive)
		{"tar-git-config-symlink.tar.gz", func(t testing.TB) []byte {
			return tgzOf(t, tent{name: "p/gitcfg", body: "[filter \"rt\"]\n\tclean = touch /tmp/kettle-evil\n"},
				tent{name: "p/.git/", typ: tar.TypeDir, mode: 0o755}, tent{name: "p/.git/config", typ: tar.TypeSymlink, link: "../gitcfg"})
		}, Limits{}, ErrUnsafeLink, "symbolic links are not allowed in or as .git"},
		{"zip-git-config-symlink.zip", func(t testing.TB) []byte {
			return zipOf(t, zent{name: "p/gitcfg", body: "[core]\n\tfsmonitor = touch /tmp/kettle-evil\n"},
				zent{name: "p/.git/config", body: "../gitcfg", mode: fs.ModeSymlink | 0o777})
		}, Limits{}, ErrUnsafeLink, "symbolic links are not allowed in or as .git"},
		{"tar-git-is-symlink.tar.gz", func(t testing.TB) []byte {
			return tgzOf(t, tent{name: "p/real/HEAD", body: "ref: refs/heads/main\n"}, tent{name: "p/.git", typ: tar.TypeSymlink, link: "real"})
		}, Limits{}, ErrUnsafeLink, "symbolic links are not allowed in or as .git"},
		{"tar-git-dir-then-symlink.tar.gz", func(t testing.TB) []byte {
			return tgzOf(t, tent{name: "p/.git/", typ: tar.TypeDir, mode: 0o755}, tent{name: "p/.git", typ: tar.TypeSymlink, link: "other"})
		}, Limits{}, ErrUnsafeLink, "symbolic links are not allowed in or as .git"},
		{"tar-git-uppercase-symlink.tar.gz", func(t testing.TB) []byte {
			return tgzOf(t, tent{name: "p/x", body: "x"}, tent{name: "p/.GIT/config", typ: tar.TypeSymlink, link: "../x"})
		}, Limits{}, ErrUnsafeLink, "symbolic links are not allowed in or as .git"},
		{"tar-git-nested-symlink.tar.gz", func(t testing.TB) []byte {
			return tgzOf(t, tent{name: "p/HEAD", body: "x"}, tent{name: "p/vendor/x/.git/HEAD", typ: tar.TypeSymlink, link: "../../../HEAD"})
		}, Limits{}, ErrUnsafeLink, "symbolic links are not allowed in or as .git"},
		{"tar-git-objects-symlink.tar.gz", func(t testing.TB) []byte {
			return tgzOf(t, tent{name: "p/objs/x", body: "x"}, tent{name: "p/.git/objects", typ: tar.TypeSymlink, link: "../objs"})
		}, Limits{}, ErrUnsafeLink, "symbolic links are not allowed in or as .git"},
		{"tar-git-hardlink.tar.gz", func(t testing.TB) []byte {
			return tgzOf(t, tent{name: "p/gitcfg", body: "[core]\n"}, tent{name: "p/.git/config", typ: tar.TypeLink, link: "p/gitcfg"})
		}, Limits{}, ErrUnsafeLink, "hard link"},
		{"tar-git-fifo.tar.gz", func(t testing.TB) []byte {
			return tgzOf(t, tent{name: "p/.git/HEAD", typ: tar.TypeFifo})
		}, Limits{}, ErrSpecialFile, "device or FIFO"},
		{"tar-symlink-to-git-write-through.tar.gz", func(t testing.TB) []byte {
			return tgzOf(t, tent{name: "p/.git/", typ: tar.TypeDir, mode: 0o755}, tent{name: "p/l", typ: tar.TypeSymlink, link: ".git"},
				tent{name: "p/l/config", body: "[core]\n\tfsmonitor = touch /tmp/kettle-evil\n"})
		}, Limits{}, ErrUnsafeLink, "written through the symlink"},
		{"tar-dir-then-symlink.tar.gz", func(t testing.TB) []byte {
			return tgzOf(t, tent{name: "p/d/", typ: tar.TypeDir, mode: 0o755}, tent{name: "p/d", typ: tar.TypeSymlink, link: "."})
		}, Limits{}, ErrDuplicate, "duplicate path"},
		// The identity is read by Go code; a .git that proves no commit is refused.
		{"tar-git-no-commit.tar.gz", func(t testing.TB) []byte {
			return tgzOf(t, tent{name: "p/a", body: "x"}, tent{name: "p/.git/HEAD", body: "ref: refs/heads/main\n"})
		}, Limits{}, ErrIdentity, "HEAD does not name a commit that exists in .git"},
		{"tar-git-head-outside.tar.gz", func(t testing.TB) []byte {
			return tgzOf(t, tent{name: "p/a", body: "x"}, tent{name: "p/.git/HEAD", body: "ref: ../../../../etc/hostname\n"})
		}, Limits{}, ErrIdentity, "malformed"},
		{"tar-git-symref-loop.tar.gz", func(t testing.TB) []byte {
			return tgzOf(t, tent{name: "p/.git/HEAD", body: "ref: refs/heads/a\n"}, tent{name: "p/.git/refs/heads/a", body: "ref: refs/heads/b\n"},
				tent{name: "p/.git/refs/heads/b", body: "ref: refs/heads/a\n"})
		}, Limits{}, ErrIdentity, "loop"},
		{"tar-git-forged-object.tar.gz", func(t testing.TB) []byte {
			// A commit stored under another commit's id.
			id, path, _ := aCommit()
			_, _, other := aCommitOf("tree 0000000000000000000000000000000000000000\n")
			return tgzOf(t, tent{name: "p/.git/HEAD", body: id + "\n"}, tent{name: "p/.git/" + path, body: other})
		}, Limits{}, ErrIdentity, "corrupt"},
		{"tar-git-alternates-only.tar.gz", func(t testing.TB) []byte {
			// The object lives only in an alternate: dropped at extraction, never read.
			id, _, _ := aCommit()
			return tgzOf(t, tent{name: "p/.git/HEAD", body: id + "\n"}, tent{name: "p/.git/objects/info/alternates", body: "/var/lib/other/.git/objects\n"})
		}, Limits{}, ErrIdentity, "not stored in .git"},
		{"tar-nested-git-dir.tar.gz", func(t testing.TB) []byte {
			return tgzOf(t, tent{name: "p/a", body: "x"}, tent{name: "p/vendor/x/.git/HEAD", body: "ref: refs/heads/main\n"})
		}, Limits{}, ErrIdentity, "vendor/x/.git: a .git entry inside the source tree"},
		// Neither
		{"not-an-archive.bin", func(t testing.TB) []byte { return []byte("#!/bin/sh\necho this is not an archive\n") }, Limits{}, ErrNotArchive, "neither a ZIP archive"},
		{"empty.bin", func(t testing.TB) []byte { return nil }, Limits{}, ErrNotArchive, "neither a ZIP archive"},
		{"zip-empty.zip", func(t testing.TB) []byte { return zipOf(t) }, Limits{}, ErrNotArchive, "empty"},
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestHostileCorpus extracts every archive of testdata/hostile/archives and
// checks the refusal: kind InvalidSource, the sentinel, a clear message
// without server paths, nothing left in the work dir and the canary beside
// it untouched. `go test ./source -run TestHostileCorpus -update`
// regenerates the files.
func TestHostileCorpus(t *testing.T) {
	cases := hostileCases()
	if *update {
		if err := os.MkdirAll(corpusDir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, c := range cases {
			if err := os.WriteFile(filepath.Join(corpusDir, c.file), c.build(t), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			t.Parallel()
			archive := filepath.Join(corpusDir, c.file)
			if _, err := os.Stat(archive); err != nil {
				t.Fatalf("corpus file missing (run with -update): %v", err)
			}
			checkRefused(t, archive, c.lim, c.want, c.msg)
		})
	}
}

// TestHostileGenerated runs the same cases on freshly generated archives,
// so the rules hold for this Go version's encoders too.
func TestHostileGenerated(t *testing.T) {
	for _, c := range hostileCases() {
		t.Run(c.file, func(t *testing.T) {
			t.Parallel()
			archive := filepath.Join(t.TempDir(), "upload")
			if err := os.WriteFile(archive, c.build(t), 0o644); err != nil {
				t.Fatal(err)
			}
			checkRefused(t, archive, c.lim, c.want, c.msg)
		})
	}
}

func checkRefused(t *testing.T, archive string, lim Limits, want error, msg string) {
	t.Helper()
	base := t.TempDir()
	canary := filepath.Join(base, "kettle-canary")
	if err := os.WriteFile(canary, []byte("canary"), 0o600); err != nil {
		t.Fatal(err)
	}
	canaryInfo, _ := os.Stat(canary)
	work := filepath.Join(base, "job", "work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	tree, err := Extract(context.Background(), archive, work, lim)
	if err == nil {
		t.Fatalf("Extract accepted the archive: %+v", tree)
	}
	var fe *failure.Error
	if !errors.As(err, &fe) || fe.Kind != failure.InvalidSource {
		t.Fatalf("error %v (%T) is not an InvalidSource failure", err, err)
	}
	if !errors.Is(err, want) {
		t.Errorf("error %q does not wrap %q", err, want)
	}
	if !strings.Contains(fe.Error(), msg) {
		t.Errorf("message %q does not contain %q", fe.Error(), msg)
	}
	if strings.Contains(fe.Error(), base) {
		t.Errorf("message %q names a server path", fe.Error())
	}
	ents, _ := os.ReadDir(work)
	if len(ents) != 0 {
		t.Errorf("work dir not cleaned up: %v", ents)
	}
	// Nothing may appear beside the work dir, and the canary is untouched.
	for _, dir := range []string{base, filepath.Dir(work)} {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if n := e.Name(); n != "kettle-canary" && n != "job" && n != "work" {
				t.Errorf("unexpected %s in %s", n, dir)
			}
		}
	}
	b, err := os.ReadFile(canary)
	st, _ := os.Stat(canary)
	if err != nil || string(b) != "canary" || !st.ModTime().Equal(canaryInfo.ModTime()) || st.Mode() != canaryInfo.Mode() {
		t.Errorf("canary touched")
	}
	if _, err := os.Lstat(filepath.Join(os.TempDir(), "kettle-evil")); err == nil {
		t.Errorf("a file was written to the temp dir")
	}
}

func TestCorpusFilesAreAllTested(t *testing.T) {
	known := map[string]bool{}
	for _, c := range hostileCases() {
		known[c.file] = true
	}
	ents, err := os.ReadDir(corpusDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !known[e.Name()] && !strings.HasSuffix(e.Name(), ".md") {
			t.Errorf("corpus file %s has no test case", e.Name())
		}
	}
}
