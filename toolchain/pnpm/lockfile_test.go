package pnpm

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

func openclaw(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "openclaw-pnpm-lock.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestParseOpenclaw parses a real pnpm v9 lockfile: 1,477 packages, two of
// them GitHub codeload tarballs; testdata/openclaw-deps.golden lists every
// uri and digest (go test -update rewrites it).
func TestParseOpenclaw(t *testing.T) {
	lock, err := ParseLock(openclaw(t))
	if err != nil {
		t.Fatal(err)
	}
	if lock.Version != "9.0" || len(lock.Dependencies) != 1477 {
		t.Fatalf("version %q, %d deps", lock.Version, len(lock.Dependencies))
	}
	// "https:" sorts before "pkg:": the two codeload tarballs come first.
	first := lock.Dependencies[2]
	if first.URI != "pkg:npm/@acemir/cssom@0.9.31?checksum=sha512-ZnR3GSaH+/vJ0YlHau21FjfLYjMpYVIzTD8M8vIEQvIGxeOXyXdzCI140rrCY862p/C/BbzWsjc1dgnM9mkoTA==" ||
		first.Digest["sha512"] != "sha512-ZnR3GSaH+/vJ0YlHau21FjfLYjMpYVIzTD8M8vIEQvIGxeOXyXdzCI140rrCY862p/C/BbzWsjc1dgnM9mkoTA==" ||
		len(first.Digest) != 1 || first.Name != "" || first.Annotations != nil {
		t.Errorf("first dep %+v", first)
	}
	var b strings.Builder
	codeload := 0
	for i, d := range lock.Dependencies {
		if i > 0 && lock.Dependencies[i-1].URI >= d.URI {
			t.Fatalf("not sorted at %d: %q >= %q", i, lock.Dependencies[i-1].URI, d.URI)
		}
		if strings.HasPrefix(d.URI, "https://codeload.github.com/") {
			codeload++
			if !strings.HasSuffix(d.URI, "/"+d.Digest["sha512"]) {
				t.Errorf("codeload dep %+v", d)
			}
		}
		b.WriteString(d.URI + " " + d.Digest["sha512"] + "\n")
	}
	if codeload != 2 {
		t.Errorf("%d codeload tarballs, want 2", codeload)
	}
	golden := filepath.Join("testdata", "openclaw-deps.golden")
	if *update {
		os.WriteFile(golden, []byte(b.String()), 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if b.String() != string(want) {
		t.Error("dependencies differ from testdata/openclaw-deps.golden")
	}
}

func TestParseLock(t *testing.T) {
	const v6 = `lockfileVersion: '6.0'
packages:
  /@babel/core@7.24.0(supports-color@8.1.1):
    resolution: {integrity: sha512-fQfkg0Gjkza3nf0c7/w6Xf34BW4YvzNfACRLmmb7XRLa6XHdR+K9AlJlxneFfWYf6uhOzuzZVTjF/8KfndZANw==}
  /@babel/core@7.24.0(supports-color@9.0.0):
    resolution: {integrity: sha512-fQfkg0Gjkza3nf0c7/w6Xf34BW4YvzNfACRLmmb7XRLa6XHdR+K9AlJlxneFfWYf6uhOzuzZVTjF/8KfndZANw==}
  /ms@2.1.3:
    resolution: {integrity: sha512-6FlzubTLZG3J2a/NVCAleEhjzq5oxgHyaCU9yYXvcLsvoVaHJq/s5xXI6/XXP6tz7R9xAOtHnSO/tXtF3WRTlA==}
  /old@1.0.0:
    resolution: {integrity: sha1-2jmYCRJpyY8kfqs6JWH/6GHCeTo=}
`
	lock, err := ParseLock([]byte(v6))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"pkg:npm/@babel/core@7.24.0?checksum=sha512-fQfkg0Gjkza3nf0c7/w6Xf34BW4YvzNfACRLmmb7XRLa6XHdR+K9AlJlxneFfWYf6uhOzuzZVTjF/8KfndZANw==",
		"pkg:npm/ms@2.1.3?checksum=sha512-6FlzubTLZG3J2a/NVCAleEhjzq5oxgHyaCU9yYXvcLsvoVaHJq/s5xXI6/XXP6tz7R9xAOtHnSO/tXtF3WRTlA==",
		"pkg:npm/old@1.0.0?checksum=sha1-2jmYCRJpyY8kfqs6JWH/6GHCeTo=",
	}
	if len(lock.Dependencies) != len(want) {
		t.Fatalf("deps %+v", lock.Dependencies)
	}
	for i, d := range lock.Dependencies {
		if d.URI != want[i] {
			t.Errorf("dep %d: %q, want %q", i, d.URI, want[i])
		}
	}

	// No packages at all (a project without dependencies).
	lock, err = ParseLock([]byte("lockfileVersion: '9.0'\n\nimporters:\n  .: {}\n"))
	if err != nil || lock.Dependencies == nil || len(lock.Dependencies) != 0 {
		t.Fatalf("empty: %+v, %v", lock, err)
	}
}

func TestParseLockErrors(t *testing.T) {
	const hdr = "lockfileVersion: '9.0'\npackages:\n"
	for _, tc := range []struct{ name, in, want string }{
		{"not yaml", "lockfileVersion: '9.0'\npackages: [\n", "pnpm-lock.yaml: line"},
		{"wrong type", hdr + "  - a\n", "cannot unmarshal"},
		{"no version", "packages: {}\n", "no lockfileVersion"},
		{"v5", "lockfileVersion: 5.4\n", `lockfileVersion "5.4" is not supported`},
		{"version map", "lockfileVersion: {a: 1}\n", "not a version"},
		{"no resolution", hdr + "  a@1.0.0: {}\n", `package "a@1.0.0" missing resolution with integrity or commit tarball`},
		{"null entry", hdr + "  a@1.0.0:\n", `package "a@1.0.0" missing resolution`},
		{"git", hdr + "  a@1.0.0:\n    resolution: {type: git, repo: 'https://example.com/a.git', commit: abc}\n", `resolution type "git" is not supported`},
		{"directory", hdr + "  a@file:../a:\n    resolution: {directory: ../a, type: directory}\n", `outside the project`},
		{"plain tarball", hdr + "  a@1.0.0:\n    resolution: {tarball: 'https://example.com/a.tgz'}\n", "a tarball without integrity"},
		{"codeload branch", hdr + "  a@https://codeload.github.com/o/r/tar.gz/main:\n    resolution: {tarball: 'https://codeload.github.com/o/r/tar.gz/main'}\n", "full commit hash"},
		{"codeload http", hdr + "  a@x:\n    resolution: {tarball: 'http://codeload.github.com/o/r/tar.gz/7eede1c1a756977b09f96aa14a92e2b06318ae87'}\n", "is not an https:// URL"},
		{"codeload elsewhere", hdr + "  a@x:\n    resolution: {tarball: 'https://evil.example/codeload.github.com/7eede1c1a756977b09f96aa14a92e2b06318ae87'}\n", "not an https://codeload.github.com/ URL"},
		{"no version in key", hdr + "  '@scope/name':\n    resolution: {integrity: sha1-2jmYCRJpyY8kfqs6JWH/6GHCeTo=}\n", "is not <name>@<version>"},
		{"no name", hdr + "  '@1.0.0':\n    resolution: {integrity: sha1-2jmYCRJpyY8kfqs6JWH/6GHCeTo=}\n", "is not <name>@<version>"},
		{"empty version", hdr + "  'a@':\n    resolution: {integrity: sha1-2jmYCRJpyY8kfqs6JWH/6GHCeTo=}\n", "is not <name>@<version>"},
		{"query in key", hdr + "  'a@1.0.0?x=y':\n    resolution: {integrity: sha1-2jmYCRJpyY8kfqs6JWH/6GHCeTo=}\n", "'?' or '#'"},
		{"space in key", hdr + "  'a@1.0 0':\n    resolution: {integrity: sha1-2jmYCRJpyY8kfqs6JWH/6GHCeTo=}\n", "a space"},
		{"bad integrity", hdr + "  a@1.0.0:\n    resolution: {integrity: md5-abc}\n", "not <sha1|sha256|sha384|sha512>-<base64>"},
		{"short integrity", hdr + "  a@1.0.0:\n    resolution: {integrity: sha512-AAAA}\n", "not a base64 sha512 digest"},
		{"two integrities", hdr + "  a@1.0.0:\n    resolution: {integrity: 'sha1-2jmYCRJpyY8kfqs6JWH/6GHCeTo= sha1-2jmYCRJpyY8kfqs6JWH/6GHCeTo='}\n", "not a base64 sha1 digest"},
		{"duplicate key", hdr + "  a@1.0.0: {}\n  a@1.0.0: {}\n", "already defined"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseLock([]byte(tc.in))
			if err == nil || !errors.Is(err, ErrLockfile) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want ErrLockfile containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
		})
	}
	if _, err := ParseLock(make([]byte, MaxLockfileSize+1)); !errors.Is(err, ErrLockfile) {
		t.Fatalf("huge lockfile: %v", err)
	}
}

func BenchmarkParseOpenclaw(b *testing.B) {
	data := openclaw(b)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := ParseLock(data); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzPnpmLock: the lockfile comes from the client. No input may panic or
// hang, errors are ErrLockfile, and what parses yields sorted dependencies
// with a digest each.
func FuzzPnpmLock(f *testing.F) {
	f.Add([]byte("lockfileVersion: '9.0'\npackages:\n  '@a/b@1.0.0(c@2.0.0)':\n    resolution: {integrity: sha1-2jmYCRJpyY8kfqs6JWH/6GHCeTo=}\n"))
	f.Add([]byte("lockfileVersion: '6.0'\npackages:\n  /x@https://codeload.github.com/o/r/tar.gz/7eede1c1a756977b09f96aa14a92e2b06318ae87:\n    resolution: {tarball: https://codeload.github.com/o/r/tar.gz/7eede1c1a756977b09f96aa14a92e2b06318ae87}\n"))
	f.Add([]byte("lockfileVersion: 9\npackages: &a [*a]\n"))
	if b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "security", "pnpm-local-inputs", LockfileName)); err == nil {
		f.Add(b)
	}
	f.Add([]byte("lockfileVersion: '6.0'\ndependencies:\n  a:\n    specifier: link:../a\n    version: link:../a\npackages:\n  file:b:\n    resolution: {directory: b, type: directory}\n    name: b\n"))
	f.Add([]byte("a: &a [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		lock, err := ParseLock(data)
		if err != nil {
			if !errors.Is(err, ErrLockfile) {
				t.Fatalf("error not ErrLockfile: %v", err)
			}
			return
		}
		for _, l := range lock.Local {
			if l.Path == ".." || strings.HasPrefix(l.Path, "../") || strings.HasPrefix(l.Path, "/") || strings.Contains(l.Path, "\\") || l.Path == "" {
				t.Fatalf("local input %+v leaves the project", l)
			}
		}
		if len(lock.Registry)+lock.OtherRemote != len(lock.Dependencies) {
			t.Fatalf("%d registry + %d other packages, %d dependencies", len(lock.Registry), lock.OtherRemote, len(lock.Dependencies))
		}
		for _, p := range lock.Registry {
			if p.Integrity == "" || p.Name == "" {
				t.Fatalf("registry package %+v", p)
			}
			if mirrorable(p) {
				tp := tarballPath(p.Name, p.Version)
				if strings.Contains(tp, "..") || strings.Contains(tp, "//") || strings.HasPrefix(tp, "/") || strings.Count(tp, "/") > 3 {
					t.Fatalf("mirror path %q of %+v", tp, p)
				}
			}
		}
		for i, d := range lock.Dependencies {
			if d.URI == "" || d.Digest[DigestKey] == "" || len(d.Digest) != 1 {
				t.Fatalf("dep %+v", d)
			}
			if i > 0 && lock.Dependencies[i-1].URI > d.URI {
				t.Fatalf("unsorted")
			}
		}
	})
}

// FuzzWorkspacePackages: pnpm-workspace.yaml and package.json come from the
// client; accepted globs and patch paths stay inside the project.
func FuzzWorkspacePackages(f *testing.F) {
	f.Add([]byte("packages:\n  - 'packages/*'\n  - '!**/test'\n"))
	f.Add([]byte("packages: ['../*']\n"))
	f.Add([]byte(`{"pnpm":{"patchedDependencies":{"ms@2.1.3":"patches/ms.patch","x@1":"../x"}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if out, err := WorkspacePackages(data); err == nil {
			if _, err := WorkspacePackages(out); err != nil {
				t.Fatalf("rewritten file refused: %v", err)
			}
		}
		refs, err := PatchFiles(data)
		if err == nil {
			for _, r := range refs {
				if r.Path == ".." || strings.HasPrefix(r.Path, "../") || strings.HasPrefix(r.Path, "/") {
					t.Fatalf("patch %+v leaves the project", r)
				}
			}
		}
	})
}
