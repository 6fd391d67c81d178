package gomod

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/mod/sumdb/dirhash"

	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/provenance"
	"github.com/kettle-build/kettle/toolchain"
)

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// replaceLie copies testdata/security/go-replace-lie: go.sum pins the real
// github.com/nats-io/nkeys v0.4.16 while go.mod replaces it by ./fake.
func replaceLie(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "go-replace-lie")
	copyTree(t, filepath.Join("..", "..", "testdata", "security", "go-replace-lie"), dir)
	return dir
}

const nkeysH1 = "rd5oAuLOb8mnAycB0xleuEBNS1pVVnN0fv/FF34Eypg="

func TestParseModReplace(t *testing.T) {
	const head = "module example.com/m\n\ngo 1.22\n\nrequire example.com/dep v1.0.0\n\n"
	for _, tc := range []struct {
		name, replace string
		local         string // the cleaned local dir, "" for a module replacement
		err           string
	}{
		{"inside", "replace example.com/dep => ./fake", "fake", ""},
		{"inside with version", "replace example.com/dep v1.0.0 => ./a/b/../c", "a/c", ""},
		{"module", "replace example.com/dep v1.0.0 => example.com/other v1.2.0", "", ""},
		{"parent", "replace example.com/dep => ../x", "", "outside the project"},
		{"climbing", "replace example.com/dep => ./a/../../x", "", "outside the project"},
		{"dotdot", "replace example.com/dep => ..", "", "outside the project"},
		{"absolute", "replace example.com/dep => /etc", "", "outside the project"},
		{"backslash", `replace example.com/dep => .\..\x`, "", "Windows path"},
		{"drive", `replace example.com/dep => C:\x`, "", "Windows path"},
		{"root slash", `replace example.com/dep => \x`, "", "Windows path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := ParseMod([]byte(head + tc.replace + "\n"))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.local != "" && (len(m.Local) != 1 || m.Local[0].Dir != tc.local || len(m.Replace) != 0):
				t.Fatalf("local %+v replace %+v", m.Local, m.Replace)
			case tc.local == "" && (len(m.Local) != 0 || len(m.Replace) != 1):
				t.Fatalf("local %+v replace %+v", m.Local, m.Replace)
			}
		})
	}
}

func TestCheckWork(t *testing.T) {
	for _, tc := range []struct{ name, work, err string }{
		{"inside", "go 1.22\n\nuse (\n\t.\n\t./tools\n)\n", ""},
		{"use outside", "go 1.22\n\nuse ../other\n", "outside the project"},
		{"use absolute", "go 1.22\n\nuse /srv/other\n", "outside the project"},
		{"replace outside", "go 1.22\n\nuse .\n\nreplace example.com/x => ../x\n", "outside the project"},
		{"invalid", "go 1.22\n\nfrobnicate\n", "invalid go.work"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckWork([]byte(tc.work))
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("err %v, want %q", err, tc.err)
			}
		})
	}
}

func TestCheckToolchain(t *testing.T) {
	for _, tc := range []struct {
		gover, toolchain string
		kind             failure.Kind
	}{
		{"1.22", "", ""},
		{"1.22", "go1.23.4", ""},
		{"1.22", "default", ""},
		{"1.22", "go1.99.0", failure.UnsupportedToolchain},
		{"1.22", "go1.99.0-custom", failure.UnsupportedToolchain},
		{"1.99", "", failure.UnsupportedToolchain},
		{"1.26rc1", "", ""},
		{"1.22", "banana", failure.InvalidSource},
	} {
		m := &Mod{Go: tc.gover, Toolchain: tc.toolchain}
		if err := m.CheckToolchain("go1.26.8"); failure.KindOf(err) != tc.kind && !(tc.kind == "" && err == nil) {
			t.Errorf("go %s toolchain %s: %v (%s), want %q", tc.gover, tc.toolchain, err, failure.KindOf(err), tc.kind)
		}
	}
}

// TestGoReplaceLieRecordedAsLocal is the go-replace-lie finding: go.sum
// pins the real nkeys and go.mod replaces it by ./fake. The provenance must
// not name the registry module: it records local code, named after the
// module it replaces, with the dirhash of ./fake (what
// dirhash.HashDir(fake, "", Hash1) computes), and the build compiles that
// code (the binary says so).
func TestGoReplaceLieRecordedAsLocal(t *testing.T) {
	needGo(t)
	ctx := context.Background()
	dir := replaceLie(t)
	w, lines := workspace(t, dir)
	d := New()
	in, err := toolchain.Plan(ctx, d, w)
	if err != nil {
		t.Fatal(err)
	}
	want, err := dirhash.HashDir(filepath.Join(dir, "fake"), "", dirhash.Hash1)
	if err != nil {
		t.Fatal(err)
	}
	if len(in.Dependencies) != 1 {
		t.Fatalf("deps %+v", in.Dependencies)
	}
	dep := in.Dependencies[0]
	if dep.URI != "file:fake" || dep.Name != "github.com/nats-io/nkeys" || "h1:"+dep.Digest[DigestKey] != want {
		t.Fatalf("dep %+v, want file:fake named github.com/nats-io/nkeys with %s", dep, want)
	}
	for _, d := range in.Dependencies {
		if strings.Contains(d.URI, "pkg:golang/github.com/nats-io/nkeys") || d.Digest[DigestKey] == nkeysH1 {
			t.Fatalf("registry module recorded although it is not built: %+v", d)
		}
	}
	if leaves := in.MerkleLeaves("c", "t"); leaves[len(leaves)-1] != "file:fake" {
		t.Fatalf("leaves %q", leaves)
	}
	if err := d.Fetch(ctx, w); err != nil {
		t.Fatalf("fetch: %v", err)
	}
	if err := d.Build(ctx, w); err != nil {
		t.Fatalf("build: %v\n%s", err, strings.Join(*lines, "\n"))
	}
	dst := t.TempDir()
	arts, err := d.Artifacts(ctx, w, dst)
	if err != nil || len(arts) != 1 {
		t.Fatalf("artifacts %v %v", arts, err)
	}
	out, _ := exec.Command(filepath.Join(dst, arts[0].Name)).Output()
	if !strings.Contains(string(out), "TAMPERED local replacement") {
		t.Fatalf("binary printed %q", out)
	}

	// Changing the local code changes its recorded digest.
	os.WriteFile(filepath.Join(dir, "fake", "nkeys.go"), []byte("package nkeys\n\nconst Version = \"other\"\n"), 0o644)
	in2, err := toolchain.Plan(ctx, New(), w)
	if err != nil || in2.Dependencies[0].Digest[DigestKey] == dep.Digest[DigestKey] {
		t.Fatalf("digest did not follow the local code: %+v %v", in2.Dependencies, err)
	}
}

// TestReplaceRefused: a replacement directory that leaves the project, by
// its text or through a symlink, or that is not a module directory, is
// InvalidSource from Inputs, before any command runs; the message names no
// server path.
func TestReplaceRefused(t *testing.T) {
	needGo(t)
	outside := t.TempDir()
	writeFiles(t, outside, map[string]string{"go.mod": "module github.com/nats-io/nkeys\n", "nkeys.go": "package nkeys\n"})
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir string)
		msg   string
	}{
		{"parent", func(t *testing.T, dir string) { setReplace(t, dir, "../x") }, "outside the project"},
		{"absolute", func(t *testing.T, dir string) { setReplace(t, dir, outside) }, "outside the project"},
		{"symlinked dir", func(t *testing.T, dir string) {
			os.RemoveAll(filepath.Join(dir, "fake"))
			os.Symlink(outside, filepath.Join(dir, "fake"))
		}, "not a directory inside the project"},
		{"symlinked parent", func(t *testing.T, dir string) {
			os.Symlink(filepath.Dir(outside), filepath.Join(dir, "up"))
			setReplace(t, dir, "./up/"+filepath.Base(outside))
		}, "not a directory inside the project"},
		{"symlinked file", func(t *testing.T, dir string) {
			os.Symlink(filepath.Join(outside, "nkeys.go"), filepath.Join(dir, "fake", "extra.go"))
		}, "cannot be hashed"},
		{"symlinked go.mod", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "fake", "go.mod"))
			os.Symlink(filepath.Join(outside, "go.mod"), filepath.Join(dir, "fake", "go.mod"))
		}, "has no go.mod"},
		{"missing", func(t *testing.T, dir string) { setReplace(t, dir, "./nowhere") }, "not a directory inside the project"},
		{"go.work outside", func(t *testing.T, dir string) {
			writeFiles(t, dir, map[string]string{"go.work": "go 1.22\n\nuse (\n\t.\n\t../other\n)\n"})
		}, "go.work uses"},
		{"go.work symlink", func(t *testing.T, dir string) {
			os.Symlink(filepath.Join(outside, "go.mod"), filepath.Join(dir, "go.work"))
		}, "cannot read go.work"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := replaceLie(t)
			tc.setup(t, dir)
			w, _ := workspace(t, dir)
			_, err := toolchain.Plan(context.Background(), New(), w)
			if failure.KindOf(err) != failure.InvalidSource || !strings.Contains(failure.Message(err), tc.msg) {
				t.Fatalf("err %v (%s: %q), want InvalidSource containing %q", err, failure.KindOf(err), failure.Message(err), tc.msg)
			}
			if msg := failure.Message(err); strings.Contains(msg, outside) || strings.Contains(msg, dir) {
				t.Fatalf("message names a server path: %q", msg)
			}
			if n := len(w.Runner.(*execRunner).cmds); n != 0 {
				t.Fatalf("%d commands ran", n)
			}
		})
	}
}

func setReplace(t *testing.T, dir, target string) {
	t.Helper()
	writeFiles(t, dir, map[string]string{"go.mod": "module example.com/rtreplace\n\ngo 1.22\n\nrequire github.com/nats-io/nkeys v0.4.16\n\nreplace github.com/nats-io/nkeys v0.4.16 => " + target + "\n"})
}

// TestToolchainDirectiveNoDownload: `toolchain go1.99.0` is refused with
// UnsupportedToolchain before any command runs, so no toolchain is ever
// downloaded (and GOTOOLCHAIN=local holds for every go command anyway).
func TestToolchainDirectiveNoDownload(t *testing.T) {
	needGo(t)
	dir := projectDir(t, "go-hello")
	b, _ := os.ReadFile(filepath.Join(dir, ModFile))
	os.WriteFile(filepath.Join(dir, ModFile), append(b, "\ntoolchain go1.99.0\n"...), 0o644)
	w, _ := workspace(t, dir)
	_, err := toolchain.Plan(context.Background(), New(), w)
	if failure.KindOf(err) != failure.UnsupportedToolchain || !strings.Contains(failure.Message(err), "toolchain go1.99.0") {
		t.Fatalf("err %v (%s: %q)", err, failure.KindOf(err), failure.Message(err))
	}
	if n := len(w.Runner.(*execRunner).cmds); n != 0 {
		t.Fatalf("%d commands ran", n)
	}
	if ents, _ := os.ReadDir(w.CacheDir); len(ents) != 0 {
		t.Fatalf("cache written: %v", ents)
	}
}

// TestGoEnvironmentIgnored: the server's GO* settings (GOFLAGS=-mod=mod,
// GOINSECURE, GONOSUMDB, GOPRIVATE, GOTOOLCHAIN, GOENV pointing at a file)
// never reach a go command; kettle's own settings do.
func TestGoEnvironmentIgnored(t *testing.T) {
	w := &toolchain.Workspace{Dir: "/p", CacheDir: "/c", Env: []string{
		"PATH=/usr/bin", "GOFLAGS=-mod=mod -toolexec=/x", "GOINSECURE=*", "GONOSUMDB=*", "GOPRIVATE=*",
		"GOTOOLCHAIN=auto", "GOENV=/p/go.env", "GOEXPERIMENT=x", "CGO_CFLAGS=-x", "GOVCS=*:all",
	}}
	env := (&Driver{}).env(w, "off")
	for k, want := range map[string]string{
		"GOFLAGS": "-mod=readonly -modcacherw", "GOINSECURE": "", "GONOSUMDB": "", "GOPRIVATE": "", "GONOPROXY": "",
		"GOTOOLCHAIN": "local", "GOENV": "off", "GOWORK": "off", "GOSUMDB": "off", "GOAUTH": "off",
		"GOVCS": "*:git", "CGO_ENABLED": "0", "GOEXPERIMENT": "", "CGO_CFLAGS": "", "PATH": "/usr/bin",
	} {
		if got := toolchain.Getenv(env, k); got != want {
			t.Errorf("%s=%q, want %q", k, got, want)
		}
	}
}

// TestReplaceByModule: go.mod replaces uuid v1.6.0 by uuid v1.5.0. What is
// built is v1.5.0, so that is what is recorded (with its go.sum hash, which
// go checks while downloading); the v1.6.0 line, still in go.sum, is not.
func TestReplaceByModule(t *testing.T) {
	needProxy(t)
	ctx := context.Background()
	dir := projectDir(t, "go-hello")
	b, _ := os.ReadFile(filepath.Join(dir, ModFile))
	os.WriteFile(filepath.Join(dir, ModFile), append(b, "\nreplace github.com/google/uuid v1.6.0 => github.com/google/uuid v1.5.0\n"...), 0o644)
	sum, _ := os.ReadFile(filepath.Join(dir, SumFile))
	sum = append(sum, "github.com/google/uuid v1.5.0 h1:1p67kYwdtXjb0gL0BPiP1Av9wiZPo5A8z2cWkTZ+eyU=\n"+
		"github.com/google/uuid v1.5.0/go.mod h1:TIyPZe4MgqvfeYDBFedMoGGpEw/LqOeaOT+nhxU+yHo=\n"...)
	os.WriteFile(filepath.Join(dir, SumFile), sum, 0o644)
	w, lines := workspace(t, dir)
	d := New()
	in, err := toolchain.Plan(ctx, d, w)
	if err != nil {
		t.Fatal(err)
	}
	want := []provenance.Dependency{{Digest: provenance.Digest{DigestKey: "1p67kYwdtXjb0gL0BPiP1Av9wiZPo5A8z2cWkTZ+eyU="}, URI: "pkg:golang/github.com/google/uuid@v1.5.0"}}
	if len(in.Dependencies) != 1 || in.Dependencies[0].URI != want[0].URI || in.Dependencies[0].Digest[DigestKey] != want[0].Digest[DigestKey] {
		t.Fatalf("deps %+v, want %+v", in.Dependencies, want)
	}
	if err := d.Fetch(ctx, w); err != nil {
		t.Fatalf("fetch: %v (%s)", err, failure.Message(err))
	}
	if err := d.Build(ctx, w); err != nil {
		t.Fatalf("build: %v\n%s", err, strings.Join(*lines, "\n"))
	}
	if _, err := d.Artifacts(ctx, w, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	// The v1.6.0 zip was never downloaded: only what is built was fetched.
	if _, err := os.Stat(filepath.Join(w.CacheDir, "gomod", "cache", "download", "github.com", "google", "uuid", "@v", "v1.6.0.zip")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("v1.6.0 downloaded: %v", err)
	}
}

// TestVendorIgnored: a vendor/ directory with a tampered copy of a module
// (which go would not hash-check) is not what is built: -mod=readonly
// makes go use the module cache, verified against go.sum.
func TestVendorIgnored(t *testing.T) {
	needProxy(t)
	ctx := context.Background()
	dir := projectDir(t, "go-hello")
	writeFiles(t, dir, map[string]string{
		"vendor/modules.txt": "# github.com/google/uuid v1.6.0\n## explicit\ngithub.com/google/uuid\n",
		"vendor/github.com/google/uuid/uuid.go": `package uuid

type UUID [16]byte

var NameSpaceURL UUID

func NewSHA1(UUID, []byte) string { return "TAMPERED-VENDOR" }
`,
	})
	w, lines := workspace(t, dir)
	d := New()
	if _, err := toolchain.Plan(ctx, d, w); err != nil {
		t.Fatal(err)
	}
	if err := d.Fetch(ctx, w); err != nil {
		t.Fatal(err)
	}
	if err := d.Build(ctx, w); err != nil {
		t.Fatalf("build: %v\n%s", err, strings.Join(*lines, "\n"))
	}
	dst := t.TempDir()
	if _, err := d.Artifacts(ctx, w, dst); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command(filepath.Join(dst, "hello")).Output()
	if strings.Contains(string(out), "TAMPERED") || !strings.Contains(string(out), "675accf2-bcdb-58a3-be28-26d850d3da70") {
		t.Fatalf("binary printed %q: vendored code was built", out)
	}
}

// TestArtifactsUnsafe: a Go build that leaves .kettle-go/bin (or a binary
// in it) as a symlink, or a binary hard-linked to a file elsewhere, gets
// BuildFailed and nothing is copied.
func TestArtifactsUnsafe(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("server secret"), 0o600)
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir string)
	}{
		{"bin symlink", func(t *testing.T, dir string) {
			os.MkdirAll(filepath.Join(dir, ScratchDir), 0o755)
			os.Symlink(filepath.Dir(secret), filepath.Join(dir, ScratchDir, "bin"))
		}},
		{"scratch symlink", func(t *testing.T, dir string) {
			os.Symlink(filepath.Dir(secret), filepath.Join(dir, ScratchDir))
		}},
		{"binary symlink", func(t *testing.T, dir string) {
			os.MkdirAll(filepath.Join(dir, ScratchDir, "bin"), 0o755)
			os.Symlink(secret, filepath.Join(dir, ScratchDir, "bin", "secret"))
		}},
		{"binary hard link", func(t *testing.T, dir string) {
			os.MkdirAll(filepath.Join(dir, ScratchDir, "bin"), 0o755)
			if err := os.Link(secret, filepath.Join(dir, ScratchDir, "bin", "secret")); err != nil {
				t.Skipf("hard link: %v", err)
			}
		}},
		{"fifo", func(t *testing.T, dir string) {
			os.MkdirAll(filepath.Join(dir, ScratchDir, "bin"), 0o755)
			mkfifo(t, filepath.Join(dir, ScratchDir, "bin", "secret"))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.setup(t, dir)
			d := &Driver{names: map[string]string{"secret": "example.com/secret"}}
			dst := t.TempDir()
			_, err := d.Artifacts(context.Background(), &toolchain.Workspace{Dir: dir}, dst)
			if failure.KindOf(err) != failure.BuildFailed {
				t.Fatalf("err %v (%s), want BuildFailed", err, failure.KindOf(err))
			}
			if ents, _ := os.ReadDir(dst); len(ents) != 0 {
				t.Fatalf("copied %v", ents)
			}
			if b, _ := os.ReadFile(secret); string(b) != "server secret" {
				t.Fatal("secret changed")
			}
		})
	}
}

func mkfifo(t *testing.T, p string) {
	t.Helper()
	if err := syscall.Mkfifo(p, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
}

// FuzzParseMod: go.mod and go.work come from the client. No input may
// panic, and a local replacement that parses never leaves the project.
func FuzzParseMod(f *testing.F) {
	f.Add([]byte("module example.com/m\n\ngo 1.22\n\nreplace example.com/dep => ./fake\n"))
	f.Add([]byte("module example.com/m\nreplace example.com/dep v1.0.0 => ../x\n"))
	f.Add([]byte("module example.com/m\ntoolchain go1.99.0\nrequire example.com/a v1.0.0\n"))
	f.Add([]byte("go 1.22\nuse (\n\t.\n\t../x\n)\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if m, err := ParseMod(data); err == nil {
			for _, l := range m.Local {
				if l.Dir == ".." || strings.HasPrefix(l.Dir, "../") || strings.HasPrefix(l.Dir, "/") || strings.Contains(l.Dir, `\`) {
					t.Fatalf("local dir %q leaves the project", l.Dir)
				}
			}
			_ = m.CheckToolchain("go1.26.8")
		}
		_ = CheckWork(data)
	})
}
