package buildcfg

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestParse(t *testing.T) {
	ok := []struct{ name, in string }{
		{"empty", ""},
		{"full", `dir = "cmd/sub"
[go]
packages = [".", "./cmd/tool", "./internal/..."]
ldflags = ["-s -w", "-X main.version={version}", "-X github.com/x/y/internal/build.Commit={commit}"]
[cargo]
bins = ["tool"]
packages = ["tool-cli"]
features = ["serde", "dep/feat"]
no_default_features = true
[pnpm]
script = "build:lib"
output = "pack"
`},
	}
	for _, tc := range ok {
		if _, err := Parse([]byte(tc.in)); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	bad := []struct{ name, in, want string }{
		{"unknown key", "target = 1", "unknown key target"},
		{"unknown go key", "[go]\ntoolexec = \"x\"", "unknown key go.toolexec"},
		{"unknown section", "[build]\ncmd = \"x\"", "unknown key"},
		{"abs dir", `dir = "/etc"`, "relative"},
		{"dotdot dir", `dir = "a/../.."`, "outside the project"},
		{"dot dir", `dir = "./a"`, "empty or"},
		{"backslash", `dir = "a\\b"`, "relative"},
		{"pattern abs", "[go]\npackages = [\"/x\"]", "start with"},
		{"pattern importpath", "[go]\npackages = [\"example.com/evil\"]", "start with"},
		{"pattern dotdot", "[go]\npackages = [\"./../x\"]", "outside"},
		{"pattern flag", "[go]\npackages = [\"-toolexec=/bin/sh\"]", "start with"},
		{"toolexec", "[go]\nldflags = [\"-toolexec=/bin/sh\"]", "only"},
		{"extldflags", "[go]\nldflags = [\"-extldflags -static\"]", "only"},
		{"linkmode", "[go]\nldflags = [\"-linkmode=external\"]", "only"},
		{"X space value", "[go]\nldflags = [\"-X main.v=a b\"]", "value"},
		{"X quote", "[go]\nldflags = [\"-X main.v='a'\"]", "value"},
		{"X no name", "[go]\nldflags = [\"-X =a\"]", "importpath.name"},
		{"X flag name", "[go]\nldflags = [\"-X -exec=x\"]", "importpath.name"},
		{"placeholder", "[go]\nldflags = [\"-X main.v={env}\"]", "unknown placeholder"},
		{"braces", "[go]\nldflags = [\"-X main.v={version\"]", "unbalanced"},
		{"cargo flag bin", "[cargo]\nbins = [\"--config=x\"]", "bins"},
		{"cargo feature", "[cargo]\nfeatures = [\"a b\"]", "features"},
		{"cargo all+", "[cargo]\nall_features = true\nfeatures = [\"a\"]", "excludes"},
		{"pnpm script", "[pnpm]\nscript = \"build && curl x\"", "script"},
		{"pnpm output", "[pnpm]\noutput = \"node_modules\"", "output"},
		{"type", "dir = 3", "line 1"},
		{"dup key", "dir = \"a\"\ndir = \"b\"", "line 2"},
		{"too big", "# " + strings.Repeat("x", MaxSize), "bytes"},
	}
	for _, tc := range bad {
		_, err := Parse([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want it to contain %q", tc.name, err, tc.want)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "kettle.toml: ") {
			t.Errorf("%s: message %q does not name the file", tc.name, err)
		}
	}
}

func TestLdflagsArg(t *testing.T) {
	c, err := Parse([]byte("[go]\nldflags = [\"-s -w\", \"-X main.version={version}\", \"-X  main.revision={commit}\"]"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Go.LdflagsArg(Stamp{Version: "v0.65.2", Commit: "abc123"})
	if want := "-s -w -X main.version=v0.65.2 -X main.revision=abc123"; err != nil || got != want {
		t.Fatalf("got %q %v, want %q", got, err, want)
	}
	if _, err := c.Go.LdflagsArg(Stamp{}); err == nil || !strings.Contains(err.Error(), "no git commit") {
		t.Fatalf("no commit: %v", err)
	}
	if _, err := c.Go.LdflagsArg(Stamp{Version: "v1 x", Commit: "abc"}); err == nil {
		t.Fatal("a tag with a space was accepted")
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	if c, err := Load(dir); c != nil || err != nil {
		t.Fatalf("no file: %v %v", c, err)
	}
	outside := filepath.Join(t.TempDir(), "x.toml")
	os.WriteFile(outside, []byte(`dir = "a"`), 0o644)
	if err := os.Symlink(outside, filepath.Join(dir, FileName)); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "regular file") {
		t.Fatalf("symlink: %v", err)
	}
	os.Remove(filepath.Join(dir, FileName))
	if err := syscall.Mkfifo(filepath.Join(dir, FileName), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "regular file") {
		t.Fatalf("fifo: %v", err)
	}
	os.Remove(filepath.Join(dir, FileName))
	os.WriteFile(filepath.Join(dir, FileName), []byte("[go]\npackages = [\"./cmd/x\"]\n"), 0o644)
	c, err := Load(dir)
	if err != nil || c.Go == nil || c.Go.Packages[0] != "./cmd/x" {
		t.Fatalf("load: %+v %v", c, err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("dir = \"a/b\"\n[go]\npackages = [\"./...\"]\nldflags = [\"-X main.v={version}\"]"))
	f.Add([]byte("[cargo]\nbins = [\"a\"]\nfeatures = [\"x/y\"]\n[pnpm]\noutput = \"pack\""))
	f.Add([]byte("[go]\nldflags = [\"-X a.b={commit}}\"]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			return
		}
		// Whatever parses never names a path out of the project nor
		// gives a flag to a tool.
		if strings.HasPrefix(c.Dir, "/") || strings.Contains(c.Dir, "..") {
			t.Fatalf("dir %q", c.Dir)
		}
		if c.Go != nil {
			for _, p := range c.Go.Packages {
				if !strings.HasPrefix(p, ".") || strings.Contains(p, "/../") || strings.HasSuffix(p, "/..") {
					t.Fatalf("package %q", p)
				}
			}
			arg, err := c.Go.LdflagsArg(Stamp{Version: "v1.2.3", Commit: "abcdef0"})
			if err == nil {
				for _, tok := range strings.Fields(arg) {
					if strings.HasPrefix(tok, "-") && tok != "-X" && tok != "-s" && tok != "-w" {
						t.Fatalf("ldflags %q pass %q", arg, tok)
					}
					if strings.ContainsAny(tok, "'\"{}") {
						t.Fatalf("ldflags %q", arg)
					}
				}
			}
		}
		if c.Cargo != nil {
			for _, s := range append(append(append([]string{}, c.Cargo.Bins...), c.Cargo.Packages...), c.Cargo.Features...) {
				if strings.HasPrefix(s, "-") || strings.ContainsAny(s, " =,") {
					t.Fatalf("cargo value %q", s)
				}
			}
		}
	})
}
