package toolchain

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestLineWriter(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		want   []string
	}{
		{"lf", []string{"a\nb\n"}, []string{"a", "b"}},
		{"crlf split across writes", []string{"a\r", "\nb\r\n"}, []string{"a", "b"}},
		{"lone cr", []string{"10%\r20%\rdone\n"}, []string{"10%", "20%", "done"}},
		{"partial last line", []string{"x", "y"}, []string{"xy"}},
		{"empty lines kept", []string{"\n\n"}, []string{"", ""}},
		{"invalid utf8", []string{"a\xffb\n"}, []string{"a\uFFFDb"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			lw := NewLineWriter(func(s string) { got = append(got, s) })
			for _, w := range tc.writes {
				lw.Write([]byte(w))
			}
			lw.Flush()
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestLineWriterHugeLine(t *testing.T) {
	var got []string
	lw := NewLineWriter(func(s string) { got = append(got, s) })
	big := strings.Repeat("x", 3*MaxLineBytes+5)
	for i := 0; i < len(big); i += 1000 {
		lw.Write([]byte(big[i:min(i+1000, len(big))]))
	}
	lw.Write([]byte("\nend\n"))
	if len(got) != 5 || got[3] != "xxxxx" || got[4] != "end" {
		t.Fatalf("got %d lines (last %q)", len(got), got[len(got)-1])
	}
	for _, l := range got[:3] {
		if len(l) != MaxLineBytes {
			t.Fatalf("piece of %d bytes", len(l))
		}
	}
}

func TestCopyArtifact(t *testing.T) {
	src := filepath.Join(t.TempDir(), "tool")
	if err := os.WriteFile(src, []byte("hello"), 0o755); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	// a read-only previous copy is replaced
	if err := os.WriteFile(filepath.Join(dst, "tool"), []byte("old"), 0o444); err != nil {
		t.Fatal(err)
	}
	a, err := CopyArtifact(src, dst)
	if err != nil {
		t.Fatal(err)
	}
	const want = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
	if a.Name != "tool" || a.SHA256 != want || a.Size != 5 {
		t.Fatalf("got %+v", a)
	}
	fi, err := os.Stat(filepath.Join(dst, "tool"))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("mode %v, %v", fi.Mode(), err)
	}
	if sum, _ := SHA256File(filepath.Join(dst, "tool")); sum != want {
		t.Fatalf("SHA256File = %s", sum)
	}
}

func TestReadProjectFileConfined(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(outside, []byte("secret"), 0o600)
	os.Symlink(outside, filepath.Join(dir, "Cargo.lock"))
	os.WriteFile(filepath.Join(dir, "real.lock"), []byte("ok"), 0o644)
	os.Symlink("real.lock", filepath.Join(dir, "inner.lock"))
	if _, err := ReadProjectFile(dir, "Cargo.lock"); err == nil {
		t.Fatal("read a symlink leaving the project")
	}
	if ProjectFileExists(dir, "Cargo.lock") {
		t.Fatal("escaping symlink counted as present")
	}
	if b, err := ReadProjectFile(dir, "inner.lock"); err != nil || string(b) != "ok" {
		t.Fatalf("inner symlink: %q %v", b, err)
	}
	if _, err := ReadProjectFile(dir, "../x"); err == nil {
		t.Fatal("read ..")
	}
}

func TestEnv(t *testing.T) {
	env := SetEnv([]string{"A=1", "PATH=/x", "A=2"}, "A=3", "B=4")
	if !reflect.DeepEqual(env, []string{"PATH=/x", "A=3", "B=4"}) {
		t.Fatalf("SetEnv: %q", env)
	}
	if Getenv(env, "A") != "3" || Getenv(env, "C") != "" {
		t.Fatal("Getenv")
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "tool"), []byte("#!/bin/sh\necho tool 1.2\n"), 0o755)
	p, err := LookPath([]string{"PATH=/nonexistent:" + dir}, "tool")
	if err != nil || p != filepath.Join(dir, "tool") {
		t.Fatalf("LookPath = %q, %v", p, err)
	}
	if _, err := LookPath([]string{"PATH=" + dir}, "nope"); err == nil {
		t.Fatal("found a missing tool")
	}
	w := &Workspace{Dir: dir, Env: []string{"PATH=" + dir}}
	tool, path, err := ResolveTool(t.Context(), w, "tool")
	if err != nil || path != filepath.Join(dir, "tool") || tool.Version != "tool 1.2" || len(tool.SHA256) != 64 {
		t.Fatalf("ResolveTool = %+v %q %v", tool, path, err)
	}
}

func TestUnsetEnv(t *testing.T) {
	got := UnsetEnv([]string{"A=1", "RUSTFLAGS=", "B=2", "RUSTFLAGS=x"}, "RUSTFLAGS")
	if !reflect.DeepEqual(got, []string{"A=1", "B=2"}) {
		t.Fatalf("%q", got)
	}
}

// TestHashToolCache: a changed binary is hashed again.
func TestHashToolCache(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "tool")
	os.WriteFile(p, []byte("#!/bin/sh\necho tool 1\n"), 0o755)
	w := &Workspace{Dir: dir, Env: []string{"PATH=" + dir}}
	a, err := HashTool(t.Context(), w, "tool", p)
	if err != nil || a.Version != "tool 1" {
		t.Fatalf("%+v %v", a, err)
	}
	if b, _ := HashTool(t.Context(), w, "tool", p); b != a {
		t.Fatalf("cached %+v != %+v", b, a)
	}
	os.WriteFile(p, []byte("#!/bin/sh\necho tool 2.0\n"), 0o755)
	b, err := HashTool(t.Context(), w, "tool", p)
	if err != nil || b.Version != "tool 2.0" || b.SHA256 == a.SHA256 {
		t.Fatalf("stale cache: %+v %v", b, err)
	}
}

// TestPieceWriterCont: a line longer than MaxLineBytes comes out in pieces,
// every piece after the first marked as a continuation; ordinary lines not.
func TestPieceWriterCont(t *testing.T) {
	type piece struct {
		n    int
		cont bool
	}
	var got []piece
	w := NewPieceWriter(func(s string, cont bool) { got = append(got, piece{len(s), cont}) })
	w.Write([]byte("short\n"))
	long := strings.Repeat("x", 2*MaxLineBytes+5)
	w.Write([]byte(long[:100]))
	w.Write([]byte(long[100:] + "\nnext\n"))
	w.Flush()
	want := []piece{{5, false}, {MaxLineBytes, false}, {MaxLineBytes, true}, {5, true}, {4, false}}
	if len(got) != len(want) || func() bool {
		for i := range got {
			if got[i] != want[i] {
				return true
			}
		}
		return false
	}() {
		t.Fatalf("pieces %+v, want %+v", got, want)
	}
}

// TestArtifactRule: the NoArtifacts message names a driver's own rule,
// which the pipeline does not know.
func TestArtifactRule(t *testing.T) {
	if got := ArtifactRule(ruled{}); got != "no binary in x/" {
		t.Errorf("ArtifactRule = %q", got)
	}
	if got := ArtifactRule(nil); got != "nothing to collect" {
		t.Errorf("ArtifactRule without a rule = %q", got)
	}
}

type ruled struct{ Driver }

func (ruled) ArtifactRule() string { return "no binary in x/" }
