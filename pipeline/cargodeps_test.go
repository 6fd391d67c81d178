package pipeline

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kettle-build/kettle/failure"
)

// TestCargoGitDependency fetches a git dependency (a local repository, so
// no network is needed) into the job's CARGO_HOME, builds offline, and
// checks that two builds with different project and cache directories give
// the same binary: the dependency's source path under CARGO_HOME would end up
// in panic messages without --remap-path-prefix.
func TestCargoGitDependency(t *testing.T) {
	env := toolEnv(t)
	needTool(t, env, "cargo")
	base := t.TempDir()
	dep := filepath.Join(base, "dep")
	os.MkdirAll(filepath.Join(dep, "src"), 0o755)
	os.WriteFile(filepath.Join(dep, "Cargo.toml"), []byte("[package]\nname = \"dep\"\nversion = \"0.1.0\"\nedition = \"2021\"\n"), 0o644)
	os.WriteFile(filepath.Join(dep, "src", "lib.rs"), []byte("pub fn parse(s: &str) -> u8 { s.parse().expect(file!()) }\n"), 0o644)
	gitRun(t, dep, "init", "-q")
	gitRun(t, dep, "add", "-A")
	gitRun(t, dep, "commit", "-q", "-m", "dep")
	depCommit := gitRun(t, dep, "rev-parse", "HEAD")

	proj := filepath.Join(base, "src", "app")
	os.MkdirAll(filepath.Join(proj, "src"), 0o755)
	os.WriteFile(filepath.Join(proj, "Cargo.toml"), []byte("[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\ndep = { git = \"file://"+dep+"\" }\n"), 0o644)
	os.WriteFile(filepath.Join(proj, "src", "main.rs"), []byte("fn main() { println!(\"{}\", dep::parse(&std::env::args().nth(1).unwrap_or_default())); }\n"), 0o644)
	cargoHome := filepath.Join(base, "lockgen")
	lockgen := exec.Command("cargo", "generate-lockfile")
	lockgen.Dir, lockgen.Env = proj, append(env, "CARGO_HOME="+cargoHome)
	if out, err := lockgen.CombinedOutput(); err != nil {
		t.Fatalf("generate-lockfile: %v\n%s", err, out)
	}
	gitRun(t, proj, "init", "-q")
	gitRun(t, proj, "add", "-A")
	gitRun(t, proj, "commit", "-q", "-m", "app")
	other := filepath.Join(base, "elsewhere", "deeper", "app2")
	gitRun(t, base, "clone", "-q", proj, other)

	var digests []string
	for i, dir := range []string{proj, other} {
		res, err := RunDir(t.Context(), Options{Dir: dir, Runner: noSandbox(), Env: env, SourceURI: "https://example.com/app.git",
			CacheDir: filepath.Join(base, "cache", strings.Repeat("x", i+1))})
		if err != nil {
			t.Fatalf("Run: %v (%s)", err, failure.KindOf(err))
		}
		deps := res.Statement.Predicate.BuildDefinition.ResolvedDependencies
		want := "pkg:cargo/dep@0.1.0?vcs_url=git+file://" + dep + "@" + depCommit
		if len(deps) != 1 || deps[0].URI != want || deps[0].Digest["gitCommit"] != depCommit {
			t.Fatalf("dependencies %+v, want %s", deps, want)
		}
		digests = append(digests, res.Artifacts[0].SHA256)
		bin, _ := os.ReadFile(filepath.Join(res.OutDir, "artifacts", "app"))
		if strings.Contains(string(bin), base) {
			t.Errorf("binary contains a build directory path: %s", pathsIn(bin, base))
		}
	}
	if digests[0] != digests[1] {
		t.Fatalf("artifact digests differ across directories: %v", digests)
	}
}

func pathsIn(bin []byte, base string) []string {
	var out []string
	s := string(bin)
	for {
		i := strings.Index(s, base)
		if i < 0 || len(out) > 5 {
			return out
		}
		end := i + len(base)
		for end < len(s) && s[end] > 32 && s[end] < 127 {
			end++
		}
		out = append(out, s[i:min(end, i+200)])
		s = s[end:]
	}
}
