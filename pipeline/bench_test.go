package pipeline

import (
	"path/filepath"
	"testing"

	"github.com/kettle-build/kettle/internal/testenv"
	"github.com/kettle-build/kettle/toolchain"
	"github.com/kettle-build/kettle/toolchain/cargo"
)

// BenchmarkRunOverhead is the pipeline's own cost per build (git context,
// tree checks, provenance, manifest, result files) around a toolchain whose
// phases are trivial shell commands.
func BenchmarkRunOverhead(b *testing.B) {
	dir := withShDriver(b, &shDriver{fetch: "true", build: "mkdir -p out && echo 1 > out/a"})
	gitRun(b, dir, "init", "-q")
	gitRun(b, dir, "add", "-A")
	gitRun(b, dir, "commit", "-q", "-m", "x")
	runner := noSandbox()
	kettleTool() // the binary is hashed once per process
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := RunDir(b.Context(), Options{Dir: dir, Runner: runner}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCargoInputs is the cost of reading Cargo inputs: Cargo.lock,
// the manifests, `rustup which` and `--version` of cargo and rustc.
func BenchmarkCargoInputs(b *testing.B) {
	env := toolEnv(b)
	_, err := toolchain.LookPath(env, "cargo")
	testenv.Need(b, err == nil, "cargo is not installed")
	dir := filepath.Join(projectsDir(), "cargo-workspace")
	w := &toolchain.Workspace{Dir: dir, Env: env}
	for i := 0; i < b.N; i++ {
		if _, err := toolchain.Plan(b.Context(), cargo.New(), w); err != nil {
			b.Fatal(err)
		}
	}
}
