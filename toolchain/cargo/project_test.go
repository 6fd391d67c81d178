package cargo

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/toolchain"
	"golang.org/x/mod/sumdb/dirhash"
)

// files writes a project (path → content; content "->target" makes a
// symlink) under dir.
func files(t *testing.T, dir string, fs map[string]string) {
	t.Helper()
	names := make([]string, 0, len(fs))
	for n := range fs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := filepath.Join(dir, n)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(fs[n], "->"); ok {
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(p, []byte(fs[n]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

const appToml = "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n"

func appLock(extra ...string) string {
	s := "version = 4\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\n"
	for _, e := range extra {
		s += e
	}
	return s
}

func h1(t *testing.T, dir string) string {
	t.Helper()
	h, err := dirhash.HashDir(dir, "", dirhash.Hash1)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(h, "h1:")
}

// TestProjectLocalCode: workspace members (literal and glob) are the
// project itself; a path dependency inside the project that is not a
// member is recorded as local code with the dirhash of its directory.
func TestProjectLocalCode(t *testing.T) {
	dir := t.TempDir()
	files(t, dir, map[string]string{
		"Cargo.toml": `[workspace]
members = ["crates/*", "tools/gen"]
exclude = ["crates/standalone"]
[workspace.package]
version = "0.7.0"
[workspace.dependencies]
shared = { path = "libs/shared" }
`,
		"crates/app/Cargo.toml": `[package]
name = "app"
version.workspace = true
[dependencies]
shared.workspace = true
[target.'cfg(unix)'.dependencies]
unixy = { path = "../../libs/unixy" }
[build-dependencies]
gen = { path = "../../tools/gen" }
standalone = { path = "../standalone" }
`,
		"crates/standalone/Cargo.toml":      "[package]\nname = \"standalone\"\nversion = \"2.0.0\"\n",
		"crates/standalone/src/lib.rs":      "",
		"crates/app/src/main.rs":            "fn main() {}",
		"crates/notacrate/README":           "no manifest: not a member",
		"tools/gen/Cargo.toml":              "[package]\nname = \"gen\"\nversion = \"1.0.0\"\n",
		"tools/gen/src/lib.rs":              "",
		"libs/shared/Cargo.toml":            "[package]\nname = \"shared\"\nversion = \"0.3.0\"\n",
		"libs/shared/src/lib.rs":            "pub fn f() {}",
		"libs/unixy/Cargo.toml":             "[package]\nname = \"unixy\"\nversion = \"0.0.1\"\n[dependencies]\nshared = { path = \"../shared\" }\n",
		"libs/unixy/src/lib.rs":             "",
		"libs/unixy/build.rs":               "fn main() {}",
		"libs/unixy/src/bin/x.rs":           "fn main() {}",
		"libs/unixy/examples/e.rs":          "fn main() {}",
		"libs/unixy/examples/README":        "not a target",
		"libs/unixy/examples/multi/main.rs": "fn main() {}",
		"libs/unixy/tests/t.rs":             "->../src/lib.rs",
		"Cargo.lock": `version = 4
[[package]]
name = "app"
version = "0.7.0"
[[package]]
name = "gen"
version = "1.0.0"
[[package]]
name = "shared"
version = "0.3.0"
[[package]]
name = "unixy"
version = "0.0.1"
[[package]]
name = "standalone"
version = "2.0.0"
`,
	})
	p, err := readProject(dir)
	if err != nil {
		t.Fatal(err)
	}
	deps, err := p.Lock.Dependencies(p)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, d := range deps {
		got[d.URI] = d.Digest[LocalDigestKey] + " " + d.Name
	}
	want := map[string]string{
		"file:libs/shared": h1(t, filepath.Join(dir, "libs/shared")) + " shared",
		"file:libs/unixy":  h1(t, filepath.Join(dir, "libs/unixy")) + " unixy",
		// excluded from the member glob: a path dependency, not a member
		"file:crates/standalone": h1(t, filepath.Join(dir, "crates/standalone")) + " standalone",
	}
	if len(got) != len(want) {
		t.Fatalf("deps %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q, want %q", k, got[k], v)
		}
	}
	for _, s := range []string{"libs/unixy/build.rs", "libs/unixy/src/bin/x.rs", "libs/unixy/examples/e.rs", "libs/unixy/examples/multi/main.rs", "libs/unixy/tests/t.rs", "crates/app/src/main.rs"} {
		if !p.stubs[s] {
			t.Errorf("no stub for %s: %v", s, p.stubs)
		}
	}

	// The fetch copy holds the manifests, the lockfile and empty stubs.
	cp := filepath.Join(t.TempDir(), "copy")
	if err := p.writeFetchCopy(cp); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(cp, "libs/unixy/build.rs")); len(b) != 0 {
		t.Errorf("build.rs stub not empty: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(cp, "crates/app/Cargo.toml")); !strings.Contains(string(b), "unixy") {
		t.Errorf("manifest not copied: %q", b)
	}
	if _, err := os.Stat(filepath.Join(cp, "crates/notacrate")); err == nil {
		t.Error("a non-member directory was copied")
	}
}

// TestProjectRefusals: every way a manifest, Cargo.lock or the project's
// cargo config can name something outside the project is refused before
// anything runs, with a message that quotes only what the client wrote.
func TestProjectRefusals(t *testing.T) {
	outside := t.TempDir()
	secret := filepath.Join(outside, "job-4f1d-secret-name")
	files(t, secret, map[string]string{
		"src-123/rce-stager/Cargo.toml": "[package]\nname = \"rt-stager\"\nversion = \"0.1.0\"\n",
		"Cargo.toml":                    "[package]\nname = \"rt-stager\"\nversion = \"0.1.0\"\n",
	})
	lockStager := appLock("[[package]]\nname = \"rt-stager\"\nversion = \"0.1.0\"\n")
	dep := func(spec string) string { return appToml + "[dependencies]\n" + spec + "\n" }
	tests := []struct {
		name string
		fs   map[string]string
		want string
	}{
		{"relative path dependency leaves", map[string]string{"Cargo.toml": dep(`rt-stager = { path = "../x" }`), "Cargo.lock": lockStager}, `"../x" leaves the project`},
		{"rce-trigger-abs", map[string]string{"Cargo.toml": dep(`rt-stager = { path = "../../../../../../../../../../../../nix/store/rt-gitrce" }`), "Cargo.lock": lockStager}, "leaves the project"},
		{"absolute path dependency", map[string]string{"Cargo.toml": dep(`rt-stager = { path = "` + secret + `" }`), "Cargo.lock": lockStager}, "is an absolute path"},
		{"rce-trigger member glob", map[string]string{"Cargo.toml": appToml + "[workspace]\nmembers = [\"../../../../job-*/src/*/rce-stager\"]\n", "Cargo.lock": lockStager}, "workspace.members entry \"../../../../job-*/src/*/rce-stager\" leaves the project"},
		{"member literal leaves", map[string]string{"Cargo.toml": "[workspace]\nmembers = [\"a/../../b\"]\n", "Cargo.lock": lockStager}, "leaves the project"},
		{"default-members leaves", map[string]string{"Cargo.toml": appToml + "[workspace]\ndefault-members = [\"../b\"]\n", "Cargo.lock": lockStager}, "leaves the project"},
		{"exclude leaves", map[string]string{"Cargo.toml": appToml + "[workspace]\nexclude = [\"/etc\"]\n", "Cargo.lock": lockStager}, "absolute path"},
		{"symlink path dependency", map[string]string{"Cargo.toml": dep(`rt-stager = { path = "link" }`), "link": "->" + secret, "Cargo.lock": lockStager}, `"link" cannot be resolved inside the project`},
		{"relative symlink path dependency", map[string]string{"Cargo.toml": dep(`rt-stager = { path = "sub/link" }`), "sub/link": "->../../" + filepath.Base(outside), "Cargo.lock": lockStager}, "cannot be resolved inside the project"},
		{"symlinked directory in a member glob", map[string]string{"Cargo.toml": appToml + "[workspace]\nmembers = [\"link/*\"]\n", "link": "->" + secret, "Cargo.lock": lockStager}, "cannot be resolved inside the project"},
		{"symlink matched by a member glob", map[string]string{"Cargo.toml": appToml + "[workspace]\nmembers = [\"m/*\"]\n", "m/x": "->" + secret, "Cargo.lock": lockStager}, "matches a path that leads out of the project"},
		{"member glob matching a manifest symlinked out", map[string]string{"Cargo.toml": appToml + "[workspace]\nmembers = [\"m/*\"]\n", "m/x/Cargo.toml": "->" + filepath.Join(secret, "Cargo.toml"), "Cargo.lock": lockStager}, "matches a Cargo.toml that cannot be read inside the project"},
		{"build script symlinked out", map[string]string{"Cargo.toml": appToml, "build.rs": "->" + filepath.Join(secret, "Cargo.toml"), "Cargo.lock": appLock()}, "build.rs cannot be resolved inside the project"},
		{"src/main.rs symlinked out", map[string]string{"Cargo.toml": appToml, "src/main.rs": "->/etc/passwd", "Cargo.lock": appLock()}, "src/main.rs cannot be resolved inside the project"},
		{"src/bin symlinked out", map[string]string{"Cargo.toml": appToml, "src/bin": "->" + secret, "Cargo.lock": appLock()}, "src/bin cannot be resolved"},
		{"** member glob", map[string]string{"Cargo.toml": appToml + "[workspace]\nmembers = [\"**/x\"]\n", "Cargo.lock": lockStager}, "not supported"},
		{"patch path", map[string]string{"Cargo.toml": appToml + "[patch.crates-io]\nitoa = { path = \"../itoa\" }\n", "Cargo.lock": appLock()}, "path of patch.crates-io.itoa"},
		{"replace path", map[string]string{"Cargo.toml": appToml + "[replace]\n\"itoa:1.0.0\" = { path = \"/usr/src/itoa\" }\n", "Cargo.lock": appLock()}, "path of replace.itoa:1.0.0"},
		{"target cfg path", map[string]string{"Cargo.toml": appToml + "[target.'cfg(unix)'.dependencies]\nx = { path = \"../x\" }\n", "Cargo.lock": appLock()}, "target.cfg(unix).dependencies.x"},
		{"build-dependencies path", map[string]string{"Cargo.toml": appToml + "[build-dependencies]\nx = { path = \"../x\" }\n", "Cargo.lock": appLock()}, "build-dependencies.x"},
		{"dev_dependencies path", map[string]string{"Cargo.toml": appToml + "[dev_dependencies]\nx = { path = \"../x\" }\n", "Cargo.lock": appLock()}, "dev_dependencies.x"},
		{"workspace.dependencies path", map[string]string{"Cargo.toml": appToml + "[workspace]\n[workspace.dependencies]\nx = { path = \"../x\" }\n", "Cargo.lock": appLock()}, "workspace.dependencies.x"},
		{"transitive path dependency leaves", map[string]string{"Cargo.toml": dep(`a = { path = "a" }`), "a/Cargo.toml": "[package]\nname = \"a\"\n[dependencies]\nb = { path = \"../../b\" }\n", "Cargo.lock": appLock()}, `a/Cargo.toml: path of dependencies.b "../../b" leaves`},
		{"package.workspace leaves", map[string]string{"Cargo.toml": appToml[:len(appToml)-1] + "\nworkspace = \"..\"\n", "Cargo.lock": appLock()}, "package.workspace"},
		{"lib.path leaves", map[string]string{"Cargo.toml": appToml + "[lib]\npath = \"../lib.rs\"\n", "Cargo.lock": appLock()}, "lib.path"},
		{"bin path absolute", map[string]string{"Cargo.toml": appToml + "[[bin]]\nname = \"x\"\npath = \"/etc/x.rs\"\n", "Cargo.lock": appLock()}, "bin.path"},
		{"build script leaves", map[string]string{"Cargo.toml": appToml[:len(appToml)-1] + "\nbuild = \"../build.rs\"\n", "Cargo.lock": appLock()}, "package.build"},
		{"registry-index file", map[string]string{"Cargo.toml": dep(`x = { version = "1", registry-index = "file:///srv/index" }`), "Cargo.lock": appLock()}, "local registry index"},
		{"Cargo.lock local registry", map[string]string{"Cargo.toml": appToml, "Cargo.lock": appLock("[[package]]\nname = \"x\"\nversion = \"1.0.0\"\nsource = \"registry+file:///srv/index\"\nchecksum = \"" + sumA + "\"\n")}, "local registry outside the project"},
		{"unknown sourceless package", map[string]string{"Cargo.toml": appToml, "Cargo.lock": lockStager}, "package rt-stager@0.1.0 has no source, and no manifest"},
		{"two path dependencies with one name and version", map[string]string{
			"Cargo.toml":          appToml + "[target.'cfg(unix)'.dependencies]\nfoo = { path = \"unix/foo\" }\n[target.'cfg(windows)'.dependencies]\nfoo = { path = \"win/foo\" }\n",
			"unix/foo/Cargo.toml": "[package]\nname = \"foo\"\nversion = \"0.1.0\"\n",
			"win/foo/Cargo.toml":  "[package]\nname = \"foo\"\nversion = \"0.1.0\"\n",
			"Cargo.lock":          appLock("[[package]]\nname = \"foo\"\nversion = \"0.1.0\"\n")}, "more than one directory"},
		{"path dependency without manifest", map[string]string{"Cargo.toml": dep(`x = { path = "x" }`), "x/src/lib.rs": "", "Cargo.lock": appLock()}, "path dependency x has no Cargo.toml"},
		{"Cargo.toml is a symlink out", map[string]string{"Cargo.toml": "->" + filepath.Join(secret, "Cargo.toml"), "Cargo.lock": appLock()}, "cannot read Cargo.toml"},
		{"Cargo.lock is a symlink out", map[string]string{"Cargo.toml": appToml, "Cargo.lock": "->" + filepath.Join(secret, "Cargo.toml")}, "cannot read Cargo.lock"},
		{"member manifest is a symlink out", map[string]string{"Cargo.toml": "[workspace]\nmembers = [\"m\"]\n", "m/Cargo.toml": "->" + filepath.Join(secret, "Cargo.toml"), "Cargo.lock": appLock()}, "cannot be read inside the project"},

		{"config paths", map[string]string{"Cargo.toml": appToml, "Cargo.lock": appLock(), ".cargo/config.toml": "paths = [\"../x\"]\n"}, "path overrides"},
		{"config patch", map[string]string{"Cargo.toml": appToml, "Cargo.lock": appLock(), ".cargo/config.toml": "[patch.crates-io]\nx = { path = \"x\" }\n"}, "[patch] in cargo configuration"},
		{"config include", map[string]string{"Cargo.toml": appToml, "Cargo.lock": appLock(), ".cargo/config.toml": "include = [\"../../x.toml\"]\n"}, "include is not supported"},
		{"config directory source leaves", map[string]string{"Cargo.toml": appToml, "Cargo.lock": appLock(), ".cargo/config.toml": "[source.crates-io]\nreplace-with = \"v\"\n[source.v]\ndirectory = \"../vendor\"\n"}, "source.v.directory \"../vendor\" leaves the project"},
		{"config directory source symlink", map[string]string{"Cargo.toml": appToml, "Cargo.lock": appLock(), "vendor": "->" + secret, ".cargo/config.toml": "[source.crates-io]\nreplace-with = \"v\"\n[source.v]\ndirectory = \"vendor\"\n"}, "cannot be resolved inside the project"},
		{"config local-registry absolute", map[string]string{"Cargo.toml": appToml, "Cargo.lock": appLock(), ".cargo/config.toml": "[source.crates-io]\nreplace-with = \"v\"\n[source.v]\nlocal-registry = \"/srv/reg\"\n"}, "absolute path"},
		{"config registry file URL", map[string]string{"Cargo.toml": appToml, "Cargo.lock": appLock(), ".cargo/config.toml": "[source.crates-io]\nreplace-with = \"v\"\n[source.v]\nregistry = \"file:///srv/index\"\n"}, "is a local path"},
		{"config registries index file", map[string]string{"Cargo.toml": appToml, "Cargo.lock": appLock(), ".cargo/config.toml": "[registries.my]\nindex = \"file:///srv/index\"\n"}, "not a network URL"},
		{"config replacement undefined", map[string]string{"Cargo.toml": appToml, "Cargo.lock": appLock(), ".cargo/config.toml": "[source.crates-io]\nreplace-with = \"nope\"\n"}, "not defined"},
		{"config replacement loop", map[string]string{"Cargo.toml": appToml, "Cargo.lock": appLock(), ".cargo/config.toml": "[source.a]\nreplace-with = \"b\"\n[source.b]\nreplace-with = \"a\"\n"}, "loops"},
		{"config is a symlink out", map[string]string{"Cargo.toml": appToml, "Cargo.lock": appLock(), ".cargo/config.toml": "->" + filepath.Join(secret, "Cargo.toml")}, ".cargo/config.toml cannot be read inside the project"},
		{"config and legacy config", map[string]string{"Cargo.toml": appToml, "Cargo.lock": appLock(), ".cargo/config.toml": "", ".cargo/config": ""}, "both .cargo/config"},
		{"config unknown source key", map[string]string{"Cargo.toml": appToml, "Cargo.lock": appLock(), ".cargo/config.toml": "[source.x]\nfoo = \"bar\"\n"}, "source.x.foo is not supported"},
	}
	fifo := func(name string) map[string]string {
		fs := map[string]string{"Cargo.toml": appToml, "Cargo.lock": appLock(), ".cargo/config.toml": ""}
		fs[name] = "fifo"
		return fs
	}
	tests = append(tests, []struct {
		name string
		fs   map[string]string
		want string
	}{
		{"Cargo.toml is a fifo", fifo("Cargo.toml"), "cannot read Cargo.toml"},
		{"Cargo.lock is a fifo", fifo("Cargo.lock"), "cannot read Cargo.lock"},
		{"config is a fifo", fifo(".cargo/config.toml"), ".cargo/config.toml cannot be read"},
		{"glob directory is a fifo", map[string]string{"Cargo.toml": "[workspace]\nmembers = [\"m/*\"]\n", "m": "fifo", "Cargo.lock": appLock()}, "cannot be resolved inside the project"},
	}...)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "proj")
			fifos := map[string]string{}
			for n, c := range tc.fs {
				if c == "fifo" {
					fifos[n] = c
				}
			}
			regular := map[string]string{}
			for n, c := range tc.fs {
				if c != "fifo" {
					regular[n] = c
				}
			}
			files(t, dir, regular)
			for n := range fifos {
				os.MkdirAll(filepath.Dir(filepath.Join(dir, n)), 0o755)
				if err := syscall.Mkfifo(filepath.Join(dir, n), 0o644); err != nil {
					t.Skip(err)
				}
			}
			p, err := readProject(dir)
			if err == nil {
				_, err = p.Lock.Dependencies(p)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			// A lockfile the plan cannot read is refused by
			// toolchain.ReadLock, as a classified failure.
			var fe *failure.Error
			if !errors.Is(err, ErrProject) && !errors.Is(err, ErrLockfile) && !errors.As(err, &fe) {
				t.Errorf("not a client error: %v", err)
			}
			for _, leak := range []string{"job-4f1d-secret-name", "src-123", outside} {
				if strings.Contains(err.Error(), leak) && !strings.Contains(tc.fs["Cargo.toml"], leak) {
					t.Errorf("error echoes %q, which kettle read outside the project: %v", leak, err)
				}
			}
			if strings.Contains(err.Error(), dir) {
				t.Errorf("error names the server path: %v", err)
			}
		})
	}
}

// vendorProject lays out the cargo-vendor shape: crates-io replaced by the
// directory vendor/, holding itoa 1.0.11 with its .cargo-checksum.json.
func vendorProject(t *testing.T, mutate func(dir string, sums map[string]string) (pkg string)) (string, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "proj")
	crate := map[string]string{
		"Cargo.toml": "[package]\nname = \"itoa\"\nversion = \"1.0.11\"\nedition = \"2018\"\n",
		"src/lib.rs": "pub struct Buffer;\n",
	}
	tarball := sha256.Sum256([]byte("the .crate"))
	pkgSum := hex.EncodeToString(tarball[:])
	files(t, dir, map[string]string{
		"Cargo.toml":         appToml + "[dependencies]\nitoa = \"1.0.11\"\n",
		"src/main.rs":        "fn main() {}",
		".cargo/config.toml": "[source.crates-io]\nreplace-with = \"vendored-sources\"\n\n[source.vendored-sources]\ndirectory = \"vendor\"\n",
		"Cargo.lock":         appLock("[[package]]\nname = \"itoa\"\nversion = \"1.0.11\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"" + pkgSum + "\"\n"),
	})
	sums := map[string]string{}
	for n, c := range crate {
		files(t, filepath.Join(dir, "vendor/itoa"), map[string]string{n: c})
		h := sha256.Sum256([]byte(c))
		sums[n] = hex.EncodeToString(h[:])
	}
	if mutate != nil {
		if s := mutate(dir, sums); s != "" {
			pkgSum = s
		}
	}
	b, _ := json.Marshal(map[string]any{"files": sums, "package": pkgSum})
	files(t, filepath.Join(dir, "vendor/itoa"), map[string]string{".cargo-checksum.json": string(b)})
	return dir, pkgSum
}

// TestVendored: a vendored crate consistent with its .cargo-checksum.json
// and Cargo.lock is recorded as local code (file:vendor/itoa, its dirhash),
// never as the registry package; anything in between is refused.
func TestVendored(t *testing.T) {
	dir, _ := vendorProject(t, nil)
	p, err := readProject(dir)
	if err != nil {
		t.Fatal(err)
	}
	deps, err := p.Lock.Dependencies(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(deps) != 1 || deps[0].URI != "file:vendor/itoa" || deps[0].Name != "itoa" || deps[0].Digest[LocalDigestKey] != h1(t, filepath.Join(dir, "vendor/itoa")) || len(deps[0].Digest) != 1 {
		t.Fatalf("deps %+v", deps)
	}

	for _, tc := range []struct {
		name   string
		mutate func(dir string, sums map[string]string) string
		want   string
	}{
		{"empty files map (cargo-vendor-lie)", func(dir string, sums map[string]string) string {
			for k := range sums {
				delete(sums, k)
			}
			return ""
		}, "lists no files"},
		{"tampered file", func(dir string, sums map[string]string) string {
			os.WriteFile(filepath.Join(dir, "vendor/itoa/src/lib.rs"), []byte("// TAMPERED\n"), 0o644)
			return ""
		}, "src/lib.rs does not match its checksum"},
		{"extra file", func(dir string, sums map[string]string) string {
			os.WriteFile(filepath.Join(dir, "vendor/itoa/src/extra.rs"), []byte("// extra\n"), 0o644)
			return ""
		}, "src/extra.rs is not listed"},
		{"missing file", func(dir string, sums map[string]string) string {
			sums["src/gone.rs"] = strings.Repeat("0", 64)
			return ""
		}, "src/gone.rs, which is missing"},
		{"package checksum is not Cargo.lock's", func(dir string, sums map[string]string) string {
			return strings.Repeat("ab", 32)
		}, "package checksum is not the one Cargo.lock pins"},
		{"symlink in the crate", func(dir string, sums map[string]string) string {
			os.Symlink("/etc/passwd", filepath.Join(dir, "vendor/itoa/src/passwd.rs"))
			sums["src/passwd.rs"] = strings.Repeat("0", 64)
			return ""
		}, "not a regular file"},
		{"file name leaving the crate", func(dir string, sums map[string]string) string {
			sums["../../Cargo.toml"] = strings.Repeat("0", 64)
			return ""
		}, "not a clean relative path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, _ := vendorProject(t, tc.mutate)
			_, err := readProject(dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrProject) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}

	t.Run("no checksum file", func(t *testing.T) {
		dir, _ := vendorProject(t, nil)
		os.Remove(filepath.Join(dir, "vendor/itoa/.cargo-checksum.json"))
		if _, err := readProject(dir); err == nil || !strings.Contains(err.Error(), "no readable .cargo-checksum.json") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("vendored copy of a source that is not replaced", func(t *testing.T) {
		dir, _ := vendorProject(t, nil)
		os.WriteFile(filepath.Join(dir, ".cargo/config.toml"), []byte("[source.vendored-sources]\ndirectory = \"vendor\"\n"), 0o644)
		if _, err := readProject(dir); err == nil || !strings.Contains(err.Error(), "cannot tell whether cargo replaces") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("replaced but not vendored", func(t *testing.T) {
		dir, _ := vendorProject(t, nil)
		os.RemoveAll(filepath.Join(dir, "vendor/itoa"))
		if _, err := readProject(dir); err == nil || !strings.Contains(err.Error(), "which does not hold it") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("the finding's project", func(t *testing.T) {
		_, err := readProject(filepath.Join("..", "..", "testdata", "security", "cargo-vendor-lie"))
		if err == nil || !strings.Contains(err.Error(), "vendored crate vendor/itoa (itoa@1.0.11): .cargo-checksum.json lists no files") {
			t.Fatalf("err = %v", err)
		}
	})
}

func FuzzProject(f *testing.F) {
	f.Add([]byte(appToml+"[dependencies]\na = { path = \"a\" }\n[workspace]\nmembers = [\"m/*\"]\n"), []byte("[source.crates-io]\nreplace-with = \"v\"\n[source.v]\ndirectory = \"vendor\"\n"), []byte(appLock()))
	f.Add([]byte("[workspace]\nmembers = [\"../*\", \"[\"]\n"), []byte("paths = []"), []byte("[[package]]\nname=\"a\"\nversion=\"1\"\n"))
	f.Add([]byte(appToml+"[patch.x]\ny = { path = \"/\" }\n[replace]\n\"a:1\" = { path = \"..\" }\n"), []byte("[registries.x]\nindex=\"file:/\"\n"), []byte(""))
	f.Fuzz(func(t *testing.T, manifest, config, lock []byte) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "Cargo.toml"), manifest, 0o644)
		os.MkdirAll(filepath.Join(dir, ".cargo"), 0o755)
		os.MkdirAll(filepath.Join(dir, "a", "src"), 0o755)
		os.MkdirAll(filepath.Join(dir, "m", "x"), 0o755)
		os.WriteFile(filepath.Join(dir, "a", "Cargo.toml"), manifest, 0o644)
		os.WriteFile(filepath.Join(dir, "m", "x", "Cargo.toml"), manifest, 0o644)
		os.WriteFile(filepath.Join(dir, ".cargo", "config.toml"), config, 0o644)
		os.WriteFile(filepath.Join(dir, "Cargo.lock"), lock, 0o644)
		p, err := readProject(dir)
		if err == nil {
			_, err = p.Lock.Dependencies(p)
		}
		if err != nil {
			if !errors.Is(err, ErrProject) && !errors.Is(err, ErrLockfile) {
				t.Fatalf("not a client error: %v", err)
			}
			if strings.Contains(err.Error(), dir) {
				t.Fatalf("error names the server path: %v", err)
			}
			return
		}
		for d := range p.Packages {
			if d == ".." || strings.HasPrefix(d, "../") || filepath.IsAbs(d) {
				t.Fatalf("package outside the project: %q", d)
			}
		}
	})
}

func FuzzChecksumJSON(f *testing.F) {
	f.Add([]byte(`{"files":{},"package":"49f1f14873335454500d59611f1cf4a4b0f786f9ac11f4312a78e4cf2566695b"}`))
	f.Add([]byte(`{"files":{"src/lib.rs":"49f1f14873335454500d59611f1cf4a4b0f786f9ac11f4312a78e4cf2566695b"},"package":null}`))
	f.Add([]byte(`{"files":{"../x":"00"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		files, pkg, err := parseChecksumJSON(data)
		if err != nil {
			return
		}
		if pkg != "" && !hex64.MatchString(pkg) {
			t.Fatalf("package %q accepted", pkg)
		}
		for name := range files {
			if filepath.IsAbs(name) || strings.HasPrefix(name, "../") || name == ".." {
				t.Fatalf("name %q accepted", name)
			}
		}
	})
}

// TestKettleCargoHome: CARGO_HOME's config is kettle's; one the fetch
// changed, or a legacy config/credentials file beside it, stops the build.
func TestKettleCargoHome(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func(home string)
	}{
		{"rewritten", func(home string) {
			os.WriteFile(filepath.Join(home, "config.toml"), []byte("[build]\nrustc-wrapper = \"/tmp/x\"\n"), 0o644)
		}},
		{"removed", func(home string) { os.Remove(filepath.Join(home, "config.toml")) }},
		{"legacy config", func(home string) { os.WriteFile(filepath.Join(home, "config"), nil, 0o644) }},
		{"credentials", func(home string) { os.WriteFile(filepath.Join(home, "credentials.toml"), nil, 0o644) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			home := t.TempDir()
			os.WriteFile(filepath.Join(home, "config"), []byte("stale"), 0o644)
			if err := writeKettleConfig(home); err != nil {
				t.Fatal(err)
			}
			if err := checkKettleConfig(home); err != nil {
				t.Fatalf("fresh: %v", err)
			}
			tc.tamper(home)
			if err := checkKettleConfig(home); err == nil {
				t.Fatal("tampered CARGO_HOME accepted")
			}
		})
	}
}

// TestProjectFifoDoesNotBlock: a FIFO where kettle lists a directory (a
// target directory, vendored crates) does not hang the trusted process.
func TestProjectFifoDoesNotBlock(t *testing.T) {
	for _, name := range []string{"src/bin", "examples", "vendor"} {
		dir := t.TempDir()
		files(t, dir, map[string]string{"Cargo.toml": appToml, "Cargo.lock": appLock(),
			".cargo/config.toml": "[source.crates-io]\nreplace-with = \"v\"\n[source.v]\ndirectory = \"vendor2\"\n", "vendor2/README": ""})
		os.MkdirAll(filepath.Join(dir, "src"), 0o755)
		if err := syscall.Mkfifo(filepath.Join(dir, name), 0o644); err != nil {
			t.Skip(err)
		}
		done := make(chan error, 1)
		go func() { _, err := readProject(dir); done <- err }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("ReadProject blocked on a FIFO at %s", name)
		}
	}
}

func TestCanonicalGit(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{"https://github.com/Foo/Bar.git", "https://github.com/foo/bar", true},
		{"https://example.com/Foo/", "https://EXAMPLE.com/Foo", true},
		{"https://example.com/Foo", "https://example.com/foo", false},
		{"file:///tmp/dep", "file:///tmp/dep/", true},
		{"https://example.com/a", "https://example.com/b", false},
	} {
		if got := canonicalGit(tc.a) == canonicalGit(tc.b); got != tc.same {
			t.Errorf("%s vs %s: same = %v", tc.a, tc.b, got)
		}
	}
}

// readProject is the driver's plan step on dir without the toolchain: the
// lock read once by toolchain.ReadLock, then ReadProject.
func readProject(dir string) (*Project, error) {
	lock, err := toolchain.ReadLock(dir, New())
	if err != nil {
		return nil, err
	}
	return ReadProject(dir, lock.Data)
}
