package gitid

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func FuzzParseLoose(f *testing.F) {
	_, raw := object("commit", []byte("tree "+string(bytes.Repeat([]byte("a"), 40))+"\n"))
	f.Add(zlibBytes(raw))
	f.Add(zlibBytes([]byte("blob 99999999999\x00")))
	f.Add([]byte("x\x9c"))
	f.Fuzz(func(t *testing.T, b []byte) {
		budget := int64(maxInflateTotal)
		typ, data, err := parseLoose(bytes.NewReader(b), func(n int64) error {
			if budget -= n; budget < 0 {
				return ErrDeltaDepth
			}
			return nil
		})
		if err == nil && (typeName(typ) == "" || len(data) > maxObject) {
			t.Fatalf("type %d, %d bytes", typ, len(data))
		}
	})
}

func FuzzApplyDelta(f *testing.F) {
	f.Add([]byte("base"), delta([]byte("base"), []byte("target")))
	f.Add([]byte("base"), []byte{4, 4, 0x90, 4})
	f.Add([]byte{}, []byte{0, 0x80, 0x80, 0x04})
	f.Fuzz(func(t *testing.T, base, d []byte) {
		out, err := applyDelta(base, d)
		if err == nil && len(out) > maxObject {
			t.Fatalf("%d bytes", len(out))
		}
	})
}

func FuzzRefs(f *testing.F) {
	f.Add([]byte("ref: refs/heads/main\n"), []byte("# pack-refs with: peeled\n"+string(bytes.Repeat([]byte("a"), 40))+" refs/heads/main\n^"+string(bytes.Repeat([]byte("b"), 40))+"\n"))
	f.Add([]byte("ref: ../../etc/passwd"), []byte("garbage"))
	f.Add([]byte(string(bytes.Repeat([]byte("c"), 64))), []byte{})
	f.Fuzz(func(t *testing.T, head, packed []byte) {
		id, err := parseRef(head, func(target string) (string, error) {
			if !validRefName(target) {
				t.Fatalf("invalid ref %q passed", target)
			}
			return lookupPackedRef(packed, target)
		})
		if err == nil {
			if _, ok := formatOf(id); !ok {
				t.Fatalf("id %q", id)
			}
		}
	})
}

// FuzzPack writes the input as a packfile whose index names one object at
// offset 12 and resolves it.
func FuzzPack(f *testing.F) {
	bid, braw := object("commit", []byte("base"))
	f.Add(append([]byte{0x14}, zlibBytes([]byte("base"))...))
	f.Add(append(append([]byte{0x74}, mustHex(bid)...), zlibBytes(delta([]byte("base"), []byte("bas")))...))
	f.Add([]byte{0x65, 0x05, 0x78})
	_ = braw
	f.Fuzz(func(t *testing.T, entry []byte) {
		h := &hostile{t: t, dir: t.TempDir()}
		os.MkdirAll(filepath.Join(h.dir, ".git"), 0o755)
		id := "0c" + string(bytes.Repeat([]byte("0"), 38))
		h.pack([]packObj{{id: id, typ: objCommit, data: nil}})
		// Replace the entry bytes after the 12-byte header.
		p := filepath.Join(h.dir, ".git", "objects", "pack", "pack-x.pack")
		data, _ := os.ReadFile(p)
		data = append(append(data[:12:12], entry...), make([]byte, 20)...)
		os.WriteFile(p, data, 0o644)
		h.head(id)
		_, err := ReadHead(filepath.Join(h.dir, ".git"))
		if err == nil {
			t.Fatal("an object with a made-up id verified")
		}
		if Reason(err) == "" && !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("unclassified error %v", err)
		}
	})
}

func FuzzOriginURL(f *testing.F) {
	f.Add([]byte("[core]\n\tbare = false\n[remote \"origin\"]\n\turl = https://example.com/r.git\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n"))
	f.Add([]byte("[remote.origin]\nurl=\"x\\\"y\"\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		u := originURL(b)
		if len(u) > maxURL || hasCtl(u) || bytes.ContainsAny([]byte(u), "\"\\") {
			t.Fatalf("url %q", u)
		}
	})
}

// FuzzIndex feeds arbitrary pack index bytes (beside a valid empty pack)
// to the object lookup.
func FuzzIndex(f *testing.F) {
	h := &hostile{t: f, dir: f.TempDir()}
	os.MkdirAll(filepath.Join(h.dir, ".git"), 0o755)
	id := "0c" + string(bytes.Repeat([]byte("0"), 38))
	h.pack([]packObj{{id: id, typ: objCommit, data: []byte("x")}})
	seed, _ := os.ReadFile(filepath.Join(h.dir, ".git", "objects", "pack", "pack-x.idx"))
	f.Add(seed)
	f.Add([]byte("\xfftOc\x00\x00\x00\x02"))
	f.Fuzz(func(t *testing.T, idx []byte) {
		h := &hostile{t: t, dir: t.TempDir()}
		os.MkdirAll(filepath.Join(h.dir, ".git"), 0o755)
		h.pack([]packObj{{id: id, typ: objCommit, data: []byte("x")}})
		h.write("objects/pack/pack-x.idx", string(idx))
		h.head(id)
		if _, err := ReadHead(filepath.Join(h.dir, ".git")); err == nil {
			t.Fatal("an object with a made-up id verified")
		}
	})
}

// FuzzParseTree: a hostile tree object parses into entries whose names
// are usable path components and whose ids have the format's length, or
// into an error; never a panic.
func FuzzParseTree(f *testing.F) {
	id := bytes.Repeat([]byte{0xab}, 20)
	f.Add(append([]byte("100644 README\x00"), id...), false)
	f.Add(append(append([]byte("40000 src\x00"), id...), append([]byte("120000 link\x00"), id...)...), false)
	f.Add([]byte("100644 ../x\x00"), false)
	f.Add(append([]byte("160000 sub\x00"), bytes.Repeat([]byte{1}, 32)...), true)
	f.Fuzz(func(t *testing.T, data []byte, sha256 bool) {
		format := SHA1
		if sha256 {
			format = SHA256
		}
		entries, err := ParseTree(data, format)
		if err != nil {
			return
		}
		for _, e := range entries {
			if e.Name == "" || e.Name == "." || e.Name == ".." || strings.ContainsAny(e.Name, "/\x00") {
				t.Fatalf("name %q", e.Name)
			}
			if len(e.ID) != 2*format.size() || !isHex(e.ID) {
				t.Fatalf("id %q", e.ID)
			}
		}
	})
}
