package cargo

import (
	"errors"
	"os"
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
			name:    "debian vendored crate",
			lock:    "[[package]]\nname = \"a\"\nversion = \"1.0.0\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"Could not get crate checksum\"\n",
			wantErr: "Debian's /usr/share/cargo/registry; regenerate it against crates.io",
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

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
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
