package buildcfg

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestProjectDirAndPaths: dir and [go] packages name real directories of
// the project; a symlink at any component (to a directory inside or
// outside), a file or a missing entry is refused.
func TestProjectDirAndPaths(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	for _, d := range []string{"svc/api/cmd/tool", "svc/other"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(root, "svc/file"), []byte("x"), 0o644)
	os.Symlink(outside, filepath.Join(root, "svc/out"))
	os.Symlink("other", filepath.Join(root, "svc/inlink"))
	os.Symlink(outside, filepath.Join(root, "svc/api/cmd/escape"))

	for _, tc := range []struct {
		dir, want string
	}{
		{"svc/api", ""},
		{"svc/api/", ""},
		{"svc/out", "symlink"},
		{"svc/out/x", "symlink"},
		{"svc/inlink", "symlink"},
		{"svc/file", "not a directory"},
		{"svc/none", "does not exist"},
	} {
		c := &Config{Dir: tc.dir}
		got, err := c.ProjectDir(root)
		switch {
		case tc.want == "" && (err != nil || got != filepath.Join(root, "svc/api")):
			t.Errorf("dir %q: %q %v", tc.dir, got, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), root)):
			t.Errorf("dir %q: err %v, want %q without the server path", tc.dir, err, tc.want)
		}
	}
	proj := filepath.Join(root, "svc/api")
	for _, tc := range []struct {
		pkg, want string
	}{
		{".", ""},
		{"./...", ""},
		{"./cmd/tool", ""},
		{"./cmd/...", ""},
		{"./cmd/escape", "symlink"},
		{"./cmd/escape/...", "symlink"},
		{"./cmd/none", "does not exist"},
	} {
		c := &Config{Go: &Go{Packages: []string{tc.pkg}}}
		err := c.CheckPaths(proj)
		if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("package %q: %v, want %q", tc.pkg, err, tc.want)
		}
	}
}

// TestCargoArgs: every value is one --flag=value argument, so a name can
// never become an option of its own.
func TestCargoArgs(t *testing.T) {
	c, err := Parse([]byte("[cargo]\npackages = [\"cli\"]\nbins = [\"tool\", \"tool2\"]\nfeatures = [\"a\", \"dep/b\"]\nno_default_features = true\n"))
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(c.Cargo.Args(), " ")
	if want := "--package=cli --bin=tool --bin=tool2 --features=a,dep/b --no-default-features"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if (*Cargo)(nil).Args() != nil {
		t.Fatal("nil section has arguments")
	}
	for _, in := range []string{
		`features = ["a,b"]`, `features = ["a;rm -rf /"]`, `features = ["$(id)"]`, "features = [\"`id`\"]",
		`features = ["a|b"]`, `features = ["--all-targets"]`, `bins = ["a b"]`, `packages = ["../x"]`,
	} {
		if _, err := Parse([]byte("[cargo]\n" + in)); err == nil {
			t.Errorf("%s accepted", in)
		}
	}
}
