package pipeline

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/source/gitid"
)

// TestBuildConfigDir: kettle.toml's dir makes the pipeline detect and
// build the subdirectory, and the provenance records the parsed file.
func TestBuildConfigDir(t *testing.T) {
	d := &shDriver{fetch: "true", build: "mkdir -p out && echo bin > out/b"}
	root := withShDriver(t, d)
	os.Remove(filepath.Join(root, "sh.lock")) // only the subproject is one
	sub := filepath.Join(root, "svc", "tool")
	os.MkdirAll(sub, 0o755)
	os.WriteFile(filepath.Join(sub, "sh.lock"), []byte("lock"), 0o644)
	os.WriteFile(filepath.Join(root, "kettle.toml"), []byte("dir = \"svc/tool\"\n"), 0o644)
	res, err := RunDir(t.Context(), Options{Dir: root, Runner: noSandbox()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(sub, "out", "b")); err != nil {
		t.Fatalf("the build did not run in dir: %v", err)
	}
	var st struct {
		Predicate struct {
			BuildDefinition struct {
				InternalParameters struct {
					BuildConfig json.RawMessage `json:"buildConfig"`
				} `json:"internalParameters"`
			} `json:"buildDefinition"`
		} `json:"predicate"`
	}
	if err := json.Unmarshal(res.Provenance, &st); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if err := json.Compact(&got, st.Predicate.BuildDefinition.InternalParameters.BuildConfig); err != nil || got.String() != `{"dir":"svc/tool"}` {
		t.Fatalf("buildConfig %s (%v)", got.String(), err)
	}

	// Without kettle.toml nothing is recorded.
	os.Remove(filepath.Join(root, "kettle.toml"))
	os.WriteFile(filepath.Join(root, "sh.lock"), []byte("lock"), 0o644)
	res, err = RunDir(t.Context(), Options{Dir: root, Runner: noSandbox()})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(res.Provenance), "buildConfig") {
		t.Fatal("buildConfig recorded without kettle.toml")
	}
}

// TestBuildConfigRefused: a kettle.toml that leaves the project, is not a
// file, is malformed or configures another toolchain is an InvalidSource
// refusal naming the file, never a server path, and nothing is built.
func TestBuildConfigRefused(t *testing.T) {
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "sh.lock"), []byte("lock"), 0o644)
	tests := []struct {
		name  string
		setup func(root string)
		want  string
	}{
		{"dotdot", func(r string) { write(r, "kettle.toml", `dir = "../x"`) }, "outside the project"},
		{"symlink dir", func(r string) {
			os.Symlink(outside, filepath.Join(r, "ext"))
			write(r, "kettle.toml", `dir = "ext"`)
		}, "symlink"},
		{"symlink in the middle", func(r string) {
			os.Symlink(outside, filepath.Join(r, "ext"))
			os.MkdirAll(filepath.Join(outside, "in"), 0o755)
			write(r, "kettle.toml", `dir = "ext/in"`)
		}, "symlink"},
		{"symlink file", func(r string) {
			write(outside, "k.toml", `dir = "x"`)
			os.Symlink(filepath.Join(outside, "k.toml"), filepath.Join(r, "kettle.toml"))
		}, "regular file"},
		{"directory", func(r string) { os.Mkdir(filepath.Join(r, "kettle.toml"), 0o755) }, "regular file"},
		{"unknown key", func(r string) { write(r, "kettle.toml", "command = \"curl x | sh\"\n") }, "unknown key"},
		{"other toolchain", func(r string) { write(r, "kettle.toml", "[go]\npackages = [\".\"]\n") }, "[go] section"},
		{"section for a driver without one", func(r string) { write(r, "kettle.toml", "[sh]\nx = 1\n") }, "unknown key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := &shDriver{fetch: "touch fetched", build: "touch built"}
			root := withShDriver(t, d)
			tc.setup(root)
			_, err := RunDir(t.Context(), Options{Dir: root, Runner: noSandbox()})
			msg := failure.Message(err)
			if failure.KindOf(err) != failure.InvalidSource || !strings.Contains(msg, "kettle.toml") || !strings.Contains(msg, tc.want) {
				t.Fatalf("err %v (%s), want InvalidSource with %q", err, failure.KindOf(err), tc.want)
			}
			if strings.Contains(msg, root) || strings.Contains(msg, outside) {
				t.Errorf("message names a server path: %q", msg)
			}
			for _, f := range []string{"fetched", "built"} {
				if _, err := os.Stat(filepath.Join(root, f)); err == nil {
					t.Errorf("%s ran", f)
				}
			}
		})
	}
}

func write(dir, name, data string) {
	os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644)
}

// TestStamp: {version} is the tag naming the commit (the remote's for a
// clone, else the checkout's own tags), else the commit; a dirty tree has
// none.
func TestStamp(t *testing.T) {
	dir := t.TempDir()
	gitRun(t, dir, "init", "-q", "-b", "main")
	write(dir, "a", "1")
	gitRun(t, dir, "add", ".")
	gitRun(t, dir, "commit", "-q", "-m", "one")
	commit := strings.TrimSpace(gitRun(t, dir, "rev-parse", "HEAD"))
	r := &run{opts: Options{Dir: dir}}
	if s := r.stamp(&gitid.Identity{Commit: commit}); s.Version != commit || s.Commit != commit {
		t.Fatalf("untagged: %+v", s)
	}
	gitRun(t, dir, "tag", "-a", "-m", "v", "v3.1.4")
	gitRun(t, dir, "tag", "v3.1.4-light")
	if s := r.stamp(&gitid.Identity{Commit: commit}); s.Version != "v3.1.4" {
		t.Fatalf("tagged: %+v", s)
	}
	if s := r.stamp(&gitid.Identity{Commit: commit, Tag: "v9"}); s.Version != "v9" {
		t.Fatalf("remote tag: %+v", s)
	}
	if s := r.stamp(&gitid.Identity{Dirty: true, HeadCommit: commit}); s.Version != "" || s.Commit != "" {
		t.Fatalf("dirty: %+v", s)
	}
}
