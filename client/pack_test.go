package client

import (
	"archive/zip"
	"bytes"
	"context"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func git(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
}

func write(t *testing.T, dir, name, content string, mode fs.FileMode) {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// zipEntries packs d and returns name → mode, and name → content for files.
func zipEntries(t *testing.T, d *Dir) (map[string]fs.FileMode, map[string]string) {
	t.Helper()
	var buf bytes.Buffer
	if err := d.WriteZip(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	zr, err := zip.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	modes, content := map[string]fs.FileMode{}, map[string]string{}
	for _, f := range zr.File {
		modes[f.Name] = f.Mode()
		if !f.Mode().IsDir() {
			rc, _ := f.Open()
			b, _ := io.ReadAll(rc)
			rc.Close()
			content[f.Name] = string(b)
		}
	}
	return modes, content
}

func TestPackDirGit(t *testing.T) {
	dir := t.TempDir()
	git(t, dir, "init", "-q")
	write(t, dir, "Cargo.toml", "[package]\n", 0o644)
	write(t, dir, "src/main.rs", "fn main() {}\n", 0o644)
	write(t, dir, "build.sh", "#!/bin/sh\n", 0o755)
	write(t, dir, ".gitignore", "target/\n", 0o644)
	write(t, dir, "gone.txt", "tracked, then deleted\n", 0o644)
	if err := os.Symlink("src/main.rs", filepath.Join(dir, "link.rs")); err != nil {
		t.Fatal(err)
	}
	git(t, dir, "add", ".")
	git(t, dir, "commit", "-qm", "init")
	os.Remove(filepath.Join(dir, "gone.txt"))
	write(t, dir, "target/release/app", "build output", 0o755)
	write(t, dir, "untracked.txt", "not for upload", 0o644)
	write(t, dir, ".git/hooks/pre-commit", "#!/bin/sh\nexit 1\n", 0o755)

	d, err := PackDir(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Git || d.SourceName() != filepath.Base(dir)+".zip" {
		t.Errorf("Git = %v, SourceName = %s", d.Git, d.SourceName())
	}
	modes, content := zipEntries(t, d)
	for _, want := range []string{"Cargo.toml", "src/main.rs", "build.sh", ".gitignore", "link.rs", ".git/", ".git/HEAD", ".git/objects/", ".git/refs/heads/main", ".git/index"} {
		if _, ok := modes[want]; !ok {
			t.Errorf("%s missing from the upload", want)
		}
	}
	for name := range modes {
		if strings.HasPrefix(name, "target/") || name == "untracked.txt" || name == "gone.txt" || strings.HasPrefix(name, ".git/hooks") {
			t.Errorf("%s uploaded", name)
		}
	}
	if modes["build.sh"].Perm() != 0o755 || modes["Cargo.toml"].Perm() != 0o644 {
		t.Errorf("modes: build.sh %v, Cargo.toml %v", modes["build.sh"], modes["Cargo.toml"])
	}
	if modes["link.rs"]&fs.ModeSymlink == 0 || content["link.rs"] != "src/main.rs" {
		t.Errorf("link.rs: mode %v, target %q", modes["link.rs"], content["link.rs"])
	}
	if !slices.ContainsFunc(d.Warnings, func(w string) bool { return strings.Contains(w, "missing from the work tree") }) {
		t.Errorf("no warning about the deleted file: %q", d.Warnings)
	}
	if !slices.ContainsFunc(d.Warnings, func(w string) bool { return strings.Contains(w, "uncommitted changes") }) {
		t.Errorf("no warning about the dirty tree: %q", d.Warnings)
	}

	// The same tree packs to the same bytes (times are fixed).
	var a, b bytes.Buffer
	d.WriteZip(context.Background(), &a)
	d.WriteZip(context.Background(), &b)
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("packing is not deterministic")
	}

	// The upload is a checkout git can read: extract it and ask git.
	x := t.TempDir()
	zr, _ := zip.NewReader(bytes.NewReader(a.Bytes()), int64(a.Len()))
	for _, f := range zr.File {
		p := filepath.Join(x, f.Name)
		switch {
		case f.Mode().IsDir():
			os.MkdirAll(p, 0o755)
		case f.Mode()&fs.ModeSymlink != 0:
			os.MkdirAll(filepath.Dir(p), 0o755)
			os.Symlink(content[f.Name], p)
		default:
			write(t, x, f.Name, content[f.Name], f.Mode().Perm())
		}
	}
	out, err := exec.Command("git", "-C", x, "rev-parse", "HEAD").CombinedOutput()
	if err != nil {
		t.Fatalf("uploaded .git is not a repository: %v\n%s", err, out)
	}
}

func TestPackDirNotGit(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "go.mod", "module x\n", 0o644)
	write(t, dir, "out/bin", "x", 0o755)
	d, err := PackDir(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if d.Git || len(d.Warnings) != 1 || !strings.Contains(d.Warnings[0], "not a git checkout") {
		t.Errorf("Git = %v, warnings %q", d.Git, d.Warnings)
	}
	modes, _ := zipEntries(t, d)
	if _, ok := modes["out/bin"]; !ok || len(modes) != 3 {
		t.Errorf("entries = %v", modes)
	}
}

func TestPackDirSubdir(t *testing.T) {
	dir := t.TempDir()
	git(t, dir, "init", "-q")
	write(t, dir, "top.txt", "x", 0o644)
	write(t, dir, "sub/go.mod", "module x\n", 0o644)
	write(t, dir, "sub/main.go", "package main\n", 0o644)
	git(t, dir, "add", ".")
	git(t, dir, "commit", "-qm", "init")
	write(t, dir, "sub/untracked.go", "package main\n", 0o644)
	d, err := PackDir(context.Background(), filepath.Join(dir, "sub"))
	if err != nil {
		t.Fatal(err)
	}
	if fmtList(d.Files) != "go.mod main.go" || len(d.Warnings) != 1 || !strings.Contains(d.Warnings[0], "not its top") {
		t.Errorf("files %v, warnings %q", d.Files, d.Warnings)
	}
}

func fmtList(s []string) string { return strings.Join(s, " ") }

func TestPackDirErrors(t *testing.T) {
	if _, err := PackDir(context.Background(), filepath.Join(t.TempDir(), "nope")); err == nil {
		t.Error("a missing directory was packed")
	}
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o644)
	if _, err := PackDir(context.Background(), f); err == nil {
		t.Error("a file was packed")
	}
}
