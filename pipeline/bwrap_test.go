package pipeline

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/internal/testenv"
	"github.com/kettle-build/kettle/sandbox"
)

// TestBwrap builds both test projects with the build phase in bubblewrap
// (skipped where bubblewrap cannot run).
func TestBwrap(t *testing.T) {
	runner, err := sandbox.New("bwrap")
	testenv.Need(t, err == nil, fmt.Sprintf("bubblewrap is unavailable: %v", err))
	env := toolEnv(t)
	for _, tc := range []struct{ project, tool, artifact string }{
		{"cargo-workspace", "cargo", "hello"},
		{"nix-flake", "nix", "kettle-hello"},
	} {
		t.Run(tc.project, func(t *testing.T) {
			needTool(t, env, tc.tool)
			dir := filepath.Join(t.TempDir(), tc.project)
			gitProject(t, tc.project, dir)
			rec := &recorder{}
			res, err := RunDir(t.Context(), Options{Dir: dir, Runner: runner, Env: env, Events: rec})
			if err != nil {
				t.Fatalf("Run: %v (%s)\nevents: %v", err, failure.KindOf(err), rec.ev)
			}
			if s := res.Statement.Predicate.BuildDefinition.InternalParameters.Sandbox; s != "" {
				t.Errorf("sandbox recorded as %q", s)
			}
			if !hasArtifact(res, tc.artifact) {
				t.Errorf("artifacts %+v", res.Artifacts)
			}
		})
	}
}

func hasArtifact(res *Result, name string) bool {
	for _, a := range res.Artifacts {
		if a.Name == name {
			return true
		}
	}
	return false
}
