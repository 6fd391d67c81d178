package cargo

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

const (
	sumA = "8e60d3430d3a69478ad0993f19238d2df97c507009a52b3c10addcd7f6bcb916"
	sumB = "a23eb6b1614318a8071c9b2521f36b424b2c83db5eb3a0fead4a6c0809af6e61"
	rev  = "900d0a0b2e19e6d4e3d63d3d4c20dcef4a8a9b1f"
)

func TestRipgrepLock(t *testing.T) {
	data, err := os.ReadFile("testdata/ripgrep-Cargo.lock")
	if err != nil {
		t.Fatal(err)
	}
	lf, err := ParseLock(data)
	if err != nil {
		t.Fatal(err)
	}
	deps, err := lf.Dependencies(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(deps) != 51 {
		t.Fatalf("%d dependencies, want 51", len(deps))
	}
	if !sort.SliceIsSorted(deps, func(i, j int) bool { return deps[i].URI < deps[j].URI }) {
		t.Fatal("not sorted by uri")
	}
	first := deps[0]
	if first.URI != "pkg:cargo/aho-corasick@1.1.3?checksum=sha256:"+sumA || first.Digest["sha256"] != sumA || first.Name != "aho-corasick" {
		t.Fatalf("first dependency %+v", first)
	}
}

func TestDependencies(t *testing.T) {
	tests := []struct {
		name    string
		lock    string
		want    []string // uris
		wantErr string
	}{
		{
			name: "registry, git and members sorted by uri",
			lock: `version = 4
[[package]]
name = "zeta"
version = "1.0.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "` + sumB + `"
[[package]]
name = "myapp"
version = "0.1.0"
[[package]]
name = "sev"
version = "6.0.0"
source = "git+https://github.com/virtee/sev?branch=main#` + rev + `"
[[package]]
name = "alpha"
version = "0.2.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "` + sumA + `"
`,
			want: []string{
				"pkg:cargo/alpha@0.2.0?checksum=sha256:" + sumA,
				"pkg:cargo/sev@6.0.0?vcs_url=git+https://github.com/virtee/sev%3Fbranch=main@" + rev,
				"pkg:cargo/zeta@1.0.0?checksum=sha256:" + sumB,
			},
		},
		{
			name: "git url percent-encoding of ? # & space",
			lock: `[[package]]
name = "x"
version = "1.0.0"
source = "git+https://example.com/a b?rev=1&tag=v#2#` + rev + `"
`,
			want: []string{"pkg:cargo/x@1.0.0?vcs_url=git+https://example.com/a%20b%3Frev=1%26tag=v%232@" + rev},
		},
		{
			name: "version 1 lockfile with metadata checksums",
			lock: `[[package]]
name = "a"
version = "1.0.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
[metadata]
"checksum a 1.0.0 (registry+https://github.com/rust-lang/crates.io-index)" = "` + sumA + `"
`,
			want: []string{"pkg:cargo/a@1.0.0?checksum=sha256:" + sumA},
		},
		{name: "empty lockfile", lock: "version = 4\n", want: []string{}},
		{
			name:    "registry without checksum",
			lock:    "[[package]]\nname = \"a\"\nversion = \"1.0.0\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n",
			wantErr: "cargo dependency a@1.0.0 from registry has no checksum",
		},
		{
			name:    "malformed checksum",
			lock:    "[[package]]\nname = \"a\"\nversion = \"1.0.0\"\nsource = \"registry+x\"\nchecksum = \"zz\"\n",
			wantErr: "malformed checksum",
		},
		{
			name:    "git without commit",
			lock:    "[[package]]\nname = \"g\"\nversion = \"1.0.0\"\nsource = \"git+https://example.com/g?branch=main\"\n",
			wantErr: "cargo dependency g@1.0.0 from git has no commit",
		},
		{
			name:    "git with a bad commit",
			lock:    "[[package]]\nname = \"g\"\nversion = \"1.0.0\"\nsource = \"git+https://example.com/g#main\"\n",
			wantErr: "malformed commit",
		},
		{
			name:    "unknown source",
			lock:    "[[package]]\nname = \"u\"\nversion = \"1.0.0\"\nsource = \"local+/x\"\n",
			wantErr: "cargo dependency u@1.0.0 has unrecognized source",
		},
		{name: "package without version", lock: "[[package]]\nname = \"u\"\n", wantErr: "package #1 has no name or version"},
		{name: "not toml", lock: "[[package]\nname = ", wantErr: "invalid Cargo.lock: line 1"},
		{name: "wrong types", lock: "package = 3\n", wantErr: "invalid Cargo.lock"},
		{name: "wrong field type", lock: "[[package]]\nname = 1\nversion = \"1\"\n", wantErr: "invalid Cargo.lock"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lf, err := ParseLock([]byte(tc.lock))
			if err == nil {
				var deps []string
				ds, derr := lf.Dependencies(nil)
				for _, d := range ds {
					deps = append(deps, d.URI)
				}
				err = derr
				if err == nil {
					if strings.Join(deps, "\n") != strings.Join(tc.want, "\n") {
						t.Fatalf("got\n%s\nwant\n%s", strings.Join(deps, "\n"), strings.Join(tc.want, "\n"))
					}
				}
			}
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrLockfile) {
				t.Fatalf("err = %v, want ErrLockfile containing %q", err, tc.wantErr)
			}
		})
	}
}

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestPathDependencies builds a project whose workspace member depends on a
// crate in a sibling git checkout (outside the project), and one inside.
func TestPathDependencies(t *testing.T) {
	base := t.TempDir()
	proj := filepath.Join(base, "my proj")
	ext := filepath.Join(base, "ext#lib")
	write(t, filepath.Join(proj, "Cargo.toml"), `[workspace]
members = ["crates/*"]
[workspace.dependencies]
shared = { path = "vendor/shared" }
`)
	write(t, filepath.Join(proj, "crates/app/Cargo.toml"), `[package]
name = "app"
version = "0.1.0"
[dependencies]
shared.workspace = true
[target.'cfg(unix)'.dependencies]
extlib = { path = "../../../ext#lib", package = "extlib" }
`)
	write(t, filepath.Join(proj, "vendor/shared/Cargo.toml"), "[package]\nname = \"shared\"\nversion = \"0.3.0\"\n")
	write(t, filepath.Join(ext, "Cargo.toml"), "[package]\nname = \"extlib\"\nversion = \"2.0.0\"\n[dependencies]\ndeeper = { path = \"../deeper\" }\n")
	write(t, filepath.Join(base, "deeper/Cargo.toml"), "[package]\nname = \"deeper\"\nversion = \"0.0.1\"\n")
	lock := `[[package]]
name = "app"
version = "0.1.0"
[[package]]
name = "shared"
version = "0.3.0"
[[package]]
name = "extlib"
version = "2.0.0"
`
	git(t, ext, "init", "-q")
	git(t, ext, "add", ".")
	git(t, ext, "commit", "-q", "-m", "x")
	head := git(t, ext, "rev-parse", "HEAD")

	local, err := ReadManifests(proj)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := local["shared 0.3.0"]; ok {
		t.Fatal("a path dependency inside the project was recorded")
	}
	if lp := local["deeper 0.0.1"]; lp.Rel != "../deeper" {
		t.Fatalf("transitive path dependency: %+v", local)
	}
	lf, err := ParseLock([]byte(lock))
	if err != nil {
		t.Fatal(err)
	}
	deps, err := lf.Dependencies(local)
	if err != nil {
		t.Fatal(err)
	}
	want := "pkg:cargo/extlib@2.0.0?vcs_url=git+file:../ext%23lib@" + head
	if len(deps) != 1 || deps[0].URI != want || deps[0].Digest["gitCommit"] != head {
		t.Fatalf("deps = %+v, want %s", deps, want)
	}

	// A dirty checkout cannot be pinned by a commit.
	write(t, filepath.Join(ext, "src/lib.rs"), "// uncommitted\n")
	_, err = lf.Dependencies(local)
	if err == nil || !strings.Contains(err.Error(), "path dependency extlib@2.0.0 at ../ext#lib: git work tree has uncommitted changes") {
		t.Fatalf("dirty: err = %v", err)
	}
	if strings.Contains(err.Error(), base) {
		t.Fatalf("error names a server path: %v", err)
	}

	// Not a git checkout at all.
	lf2, _ := ParseLock([]byte("[[package]]\nname = \"deeper\"\nversion = \"0.0.1\"\n"))
	if _, err := lf2.Dependencies(local); err == nil || !strings.Contains(err.Error(), "not in a git repository") {
		t.Fatalf("no git: err = %v", err)
	}
}

func TestReadManifestsErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadManifests(dir); !errors.Is(err, ErrLockfile) {
		t.Fatalf("no Cargo.toml: %v", err)
	}
	write(t, filepath.Join(dir, "Cargo.toml"), "[package]\nname = \"a\"\n[dependencies]\nb = { path = \"../missing\" }\n")
	_, err := ReadManifests(dir)
	if err == nil || !strings.Contains(err.Error(), "path dependency ../missing does not exist") {
		t.Fatalf("missing path dep: %v", err)
	}
	write(t, filepath.Join(dir, "Cargo.toml"), "[package\n")
	if _, err := ReadManifests(dir); !errors.Is(err, ErrLockfile) {
		t.Fatalf("bad toml: %v", err)
	}
}

func FuzzCargoLock(f *testing.F) {
	if data, err := os.ReadFile("testdata/ripgrep-Cargo.lock"); err == nil {
		f.Add(data)
	}
	f.Add([]byte("[[package]]\nname = \"g\"\nversion = \"1\"\nsource = \"git+https://x/y?a=b#" + rev + "\"\n"))
	f.Add([]byte("[metadata]\n\"checksum a 1 (registry+x)\" = \"<none>\"\n[[package]]\nname=\"a\"\nversion=\"1\"\nsource=\"registry+x\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		lf, err := ParseLock(data)
		if err != nil {
			if !errors.Is(err, ErrLockfile) {
				t.Fatalf("error not wrapping ErrLockfile: %v", err)
			}
			return
		}
		deps, err := lf.Dependencies(nil)
		if err != nil {
			if !errors.Is(err, ErrLockfile) {
				t.Fatalf("error not wrapping ErrLockfile: %v", err)
			}
			return
		}
		for i := 1; i < len(deps); i++ {
			if deps[i-1].URI > deps[i].URI {
				t.Fatal("not sorted")
			}
		}
	})
}
