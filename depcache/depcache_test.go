package depcache

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func mkfifo(p string) { unix.Mkfifo(p, 0o644) }

func put(t *testing.T, c *Cache, k Key, files map[string]string) {
	t.Helper()
	st, err := c.Stage()
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		p := filepath.Join(st, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Put(k, st, func(string) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(st); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("staged directory left behind: %v", err)
	}
}

func open(t *testing.T, budget int64) *Cache {
	t.Helper()
	c, err := Open(filepath.Join(t.TempDir(), "depcache"), budget, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestPutGet: an entry put is got back with its bytes, read-only; an
// unknown key misses; a verify error keeps the entry out.
func TestPutGet(t *testing.T) {
	c := open(t, 1<<20)
	k := Key{"test", "h1:abc"}
	put(t, c, k, map[string]string{"go.mod": "module x\n", "a/b.go": "package b\n"})
	l := c.NewLease()
	defer l.Release()
	dir, ok := c.Get(k, l)
	if !ok {
		t.Fatal("miss after Put")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "a", "b.go")); string(b) != "package b\n" {
		t.Fatalf("content %q", b)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "go.mod")); fi.Mode().Perm() != 0o444 {
		t.Fatalf("mode %v", fi.Mode())
	}
	if _, ok := c.Get(Key{"test", "h1:other"}, l); ok {
		t.Fatal("hit for an unknown key")
	}
	if _, ok := c.Get(Key{"other", "h1:abc"}, l); ok {
		t.Fatal("hit for the same digest of another kind")
	}
	st, _ := c.Stage()
	os.WriteFile(filepath.Join(st, "f"), []byte("x"), 0o644)
	bad := Key{"test", "h1:bad"}
	if err := c.Put(bad, st, func(string) error { return errors.New("digest mismatch") }); err == nil {
		t.Fatal("Put kept an entry that failed verification")
	}
	if _, ok := c.Get(bad, l); ok {
		t.Fatal("unverified entry served")
	}
}

// TestPoisonedEntries: every way an entry on disk can differ from what was
// verified at fill time is refused (the entry removed, Get misses), and a
// fill refuses links in what it is given.
func TestPoisonedEntries(t *testing.T) {
	k := Key{"test", "h1:poison"}
	for _, tc := range []struct {
		name   string
		poison func(t *testing.T, dir string)
	}{
		{"bytes-changed", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "a.go")
			os.Chmod(p, 0o644)
			if err := os.WriteFile(p, []byte("package evil\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"same-size-rewrite-times-restored", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "a.go")
			fi, _ := os.Stat(p)
			os.Chmod(p, 0o644)
			os.WriteFile(p, []byte("package no\n"), 0o644) // same size
			os.Chtimes(p, fi.ModTime(), fi.ModTime())      // mtime put back; ctime cannot be
		}},
		{"replaced-by-symlink", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "a.go")
			os.Remove(p)
			os.Symlink("/etc/passwd", p)
		}},
		{"symlink-added", func(t *testing.T, dir string) {
			os.Symlink("/etc/passwd", filepath.Join(dir, "b.go"))
		}},
		{"hardlink-to-entry-file", func(t *testing.T, dir string) {
			// a link elsewhere through which the file could be written
			os.Link(filepath.Join(dir, "a.go"), filepath.Join(t.TempDir(), "link"))
		}},
		{"file-added", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "init.go"), []byte("package ok\n"), 0o644)
		}},
		{"file-added-in-subdirectory", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "sub", "init.go"), []byte("package sub\n"), 0o644)
		}},
		{"file-added-directory-times-restored", func(t *testing.T, dir string) {
			sub := filepath.Join(dir, "sub")
			fi, _ := os.Stat(sub)
			os.WriteFile(filepath.Join(sub, "init.go"), []byte("package sub\n"), 0o644)
			os.Chtimes(sub, fi.ModTime(), fi.ModTime()) // mtime put back; ctime cannot be
		}},
		{"subdirectory-replaced-by-symlink", func(t *testing.T, dir string) {
			evil := filepath.Join(t.TempDir(), "evil")
			os.Mkdir(evil, 0o755)
			os.WriteFile(filepath.Join(evil, "c.go"), []byte("package sub\n"), 0o444)
			os.RemoveAll(filepath.Join(dir, "sub"))
			os.Symlink(evil, filepath.Join(dir, "sub"))
		}},
		{"file-renamed-over-another", func(t *testing.T, dir string) {
			os.Rename(filepath.Join(dir, "sub", "c.go"), filepath.Join(dir, "a.go"))
		}},
		{"file-removed", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "sub", "c.go"))
		}},
		{"directory-swapped", func(t *testing.T, dir string) {
			evil := filepath.Join(t.TempDir(), "evil")
			os.Mkdir(evil, 0o755)
			os.WriteFile(filepath.Join(evil, "a.go"), []byte("package ok\n"), 0o444)
			os.RemoveAll(dir)
			os.Rename(evil, dir)
		}},
		{"entry-is-symlink", func(t *testing.T, dir string) {
			evil := filepath.Join(t.TempDir(), "evil")
			os.Mkdir(evil, 0o755)
			os.RemoveAll(dir)
			os.Symlink(evil, dir)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := open(t, 1<<20)
			put(t, c, k, map[string]string{"a.go": "package ok\n", "sub/c.go": "package sub\n"})
			l := c.NewLease()
			dir, ok := c.Get(k, l)
			l.Release()
			if !ok {
				t.Fatal("miss before poisoning")
			}
			time.Sleep(10 * time.Millisecond) // distinct ctime on coarse clocks
			tc.poison(t, dir)
			l = c.NewLease()
			defer l.Release()
			if _, ok := c.Get(k, l); ok {
				t.Fatal("poisoned entry served")
			}
			if _, err := os.Lstat(c.record(k)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("poisoned entry's record kept: %v", err)
			}
			// A fresh fill replaces it.
			put(t, c, k, map[string]string{"a.go": "package ok\n", "sub/c.go": "package sub\n"})
			if d, ok := c.Get(k, l); !ok {
				t.Fatal("refill not served")
			} else if b, _ := os.ReadFile(filepath.Join(d, "a.go")); string(b) != "package ok\n" {
				t.Fatalf("refill content %q", b)
			}
		})
	}
}

// TestSealRefusesLinks: a staged fill holding a symlink, a hard link or a
// FIFO is refused before anything is recorded.
func TestSealRefusesLinks(t *testing.T) {
	for _, tc := range []struct {
		name string
		make func(st string)
	}{
		{"symlink", func(st string) { os.Symlink("/etc/passwd", filepath.Join(st, "x")) }},
		{"hardlink", func(st string) {
			os.WriteFile(filepath.Join(st, "a"), []byte("a"), 0o644)
			os.Link(filepath.Join(st, "a"), filepath.Join(st, "b"))
		}},
		{"fifo", func(st string) { mkfifo(filepath.Join(st, "p")) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := open(t, 1<<20)
			st, _ := c.Stage()
			tc.make(st)
			k := Key{"test", tc.name}
			if err := c.Put(k, st, func(string) error { return nil }); err == nil {
				t.Fatal("Put accepted it")
			}
			if _, ok := c.Get(k, c.NewLease()); ok {
				t.Fatal("served")
			}
		})
	}
}

// TestEviction: the cache stays within its budget, least recently used
// entries go first, and a leased entry is never evicted.
func TestEviction(t *testing.T) {
	blob := string(bytes.Repeat([]byte("x"), 16<<10))
	one := func() map[string]string { return map[string]string{"f": blob} }
	c := open(t, 1<<20)
	put(t, c, Key{"t", "probe"}, one())
	per, _ := c.Usage()
	c = open(t, 3*per+per/2) // room for three
	keys := []Key{{"t", "a"}, {"t", "b"}, {"t", "c"}, {"t", "d"}, {"t", "e"}}
	held := c.NewLease()
	defer held.Release()
	for i, k := range keys[:3] {
		put(t, c, k, one())
		time.Sleep(5 * time.Millisecond)
		if i == 0 {
			if _, ok := c.Get(k, held); !ok { // a is in use from now on
				t.Fatal("miss")
			}
		}
	}
	l := c.NewLease()
	c.Get(keys[2], l) // c used after b
	l.Release()
	time.Sleep(5 * time.Millisecond)
	put(t, c, keys[3], one()) // over budget: b (oldest not held) goes
	put(t, c, keys[4], one()) // then c
	if used, n := c.Usage(); used > c.Budget() || n != 3 {
		t.Fatalf("usage %d bytes in %d entries, budget %d", used, n, c.Budget())
	}
	l = c.NewLease()
	defer l.Release()
	for k, want := range map[Key]bool{keys[0]: true, keys[1]: false, keys[2]: false, keys[3]: true, keys[4]: true} {
		if _, ok := c.Get(k, l); ok != want {
			t.Errorf("%s present %v, want %v", k, ok, want)
		}
	}
	// One entry larger than the whole budget is not cached.
	st, _ := c.Stage()
	os.WriteFile(filepath.Join(st, "big"), bytes.Repeat([]byte("y"), int(c.Budget())+1), 0o644)
	if err := c.Put(Key{"t", "big"}, st, func(string) error { return nil }); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Put big: %v", err)
	}
}

// TestConcurrentFill: jobs of two processes (two Caches on one
// directory) filling the same entry at once end with one valid entry.
func TestConcurrentFill(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "depcache")
	var wg sync.WaitGroup
	k := Key{"t", "same"}
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := Open(dir, 1<<20, nil)
			if err != nil {
				t.Error(err)
				return
			}
			st, _ := c.Stage()
			os.WriteFile(filepath.Join(st, "f"), []byte("same bytes"), 0o644)
			if err := c.Put(k, st, func(string) error { return nil }); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	c, _ := Open(dir, 1<<20, nil)
	l := c.NewLease()
	defer l.Release()
	if d, ok := c.Get(k, l); !ok {
		t.Fatal("miss")
	} else if b, _ := os.ReadFile(filepath.Join(d, "f")); string(b) != "same bytes" {
		t.Fatalf("%q", b)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
		t.Fatalf("tmp left: %v", ents)
	}
}

// TestOpenRefusesUnsafeDir: a cache directory that others can write, or a
// symlink, is refused.
func TestOpenRefusesUnsafeDir(t *testing.T) {
	d := filepath.Join(t.TempDir(), "c")
	os.Mkdir(d, 0o777)
	os.Chmod(d, 0o777)
	if _, err := Open(d, 1<<20, nil); err == nil {
		t.Fatal("world-writable cache accepted")
	}
	real := filepath.Join(t.TempDir(), "real")
	os.Mkdir(real, 0o755)
	os.Mkdir(filepath.Join(real, "entries"), 0o755)
	link := filepath.Join(t.TempDir(), "link")
	os.Symlink(filepath.Join(real, "entries"), filepath.Join(real, "records"))
	_ = link
	if _, err := Open(real, 1<<20, nil); err == nil {
		t.Fatal("symlinked records/ accepted")
	}
}

// TestRecordRoundTrip: a record decodes to what was encoded, "." first
// even when a name sorts before it; damaged records are refused.
func TestRecordRoundTrip(t *testing.T) {
	c := open(t, 1<<20)
	k := Key{"test", "h1:order"}
	put(t, c, k, map[string]string{"+x": "a", "-y/z": "b", "a/b": "c", "a-b": "d"})
	data, err := os.ReadFile(c.record(k))
	if err != nil {
		t.Fatal(err)
	}
	r, err := decodeRecord(data, false)
	if err != nil {
		t.Fatal(err)
	}
	if r.Kind != k.Kind || r.Digest != k.Digest || r.Bytes <= 0 || len(r.Files) != 7 || r.Files[0].Path != "." {
		t.Fatalf("record %+v", r)
	}
	if string(r.encode()) != string(data) {
		t.Fatal("re-encoding differs")
	}
	l := c.NewLease()
	defer l.Release()
	if _, ok := c.Get(k, l); !ok {
		t.Fatal("entry with names sorting before \".\" refused")
	}
	for i := range data {
		if _, err := decodeRecord(data[:i], false); err == nil {
			t.Fatalf("truncated record (%d of %d bytes) accepted", i, len(data))
		}
	}
	for _, bad := range []string{"../x", "/abs", "a/../b", "a//b", "."} {
		r2 := *r
		r2.Files = append([]fp{r.Files[0]}, fp{Path: bad})
		if _, err := decodeRecord(r2.encode(), false); err == nil {
			t.Errorf("path %q accepted", bad)
		}
	}
	r3 := *r
	r3.Files = []fp{r.Files[0], {Path: "b"}, {Path: "a"}}
	if _, err := decodeRecord(r3.encode(), false); err == nil {
		t.Error("unsorted paths accepted")
	}
}

// FuzzDecodeRecord: no input panics or yields a path check could use to
// leave the entry.
func FuzzDecodeRecord(f *testing.F) {
	r := &recordData{Kind: "go-h1", Digest: "abc=", Bytes: 4096, Files: []fp{{Path: ".", Dir: true, Ino: 2}, {Path: "a", Size: 3, Ino: 5}, {Path: "a/b", Dir: true}}}
	f.Add(r.encode())
	f.Add([]byte(recordMagic))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := decodeRecord(data, false)
		if err != nil {
			return
		}
		for i, fp := range r.Files {
			if i > 0 && (!filepath.IsLocal(fp.Path) || fp.Path == ".") {
				t.Fatalf("path %q accepted", fp.Path)
			}
		}
		if _, err := decodeRecord(r.encode(), false); err != nil {
			t.Fatalf("re-encoded record refused: %v", err)
		}
	})
}

// TestUsageTotal: the running total follows fills, drops and evictions,
// and a lost or damaged total is counted again.
func TestUsageTotal(t *testing.T) {
	c := open(t, 1<<20)
	for _, d := range []string{"a", "b", "c"} {
		put(t, c, Key{"t", d}, map[string]string{"f": d})
	}
	unlock, _ := c.lock()
	v, ok := c.readUsageLocked()
	unlock()
	if want, _ := c.Usage(); !ok || v != want {
		t.Fatalf("total %d (%v), records say %d", v, ok, want)
	}
	os.WriteFile(c.usagePath(), []byte("garbage"), 0o600)
	put(t, c, Key{"t", "d"}, map[string]string{"f": "d"})
	c.drop(Key{"t", "a"}, "test")
	unlock, _ = c.lock()
	v, ok = c.readUsageLocked()
	unlock()
	if want, n := c.Usage(); !ok || v != want || n != 3 {
		t.Fatalf("total %d (%v), records say %d in %d", v, ok, want, n)
	}
}
