package pipeline

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kettle-build/kettle/failure"
)

// TestDetectSaysWhatItFound (issue 18): a project kettle cannot build is
// refused with what was found and what to do.
func TestDetectSaysWhatItFound(t *testing.T) {
	for _, c := range []struct {
		name  string
		files []string
		want  []string // substrings of the message
	}{
		{"cargo without lock", []string{"Cargo.toml", "src/main.rs"}, []string{"found Cargo.toml but no Cargo.lock", "cargo generate-lockfile"}},
		{"npm project", []string{"package.json", "package-lock.json"}, []string{"found package.json but no pnpm-lock.yaml", "pnpm install", "package-lock.json"}},
		{"nothing known", []string{"main.py", "README.md"}, []string{"none of flake.nix", `"README.md"`, `"main.py"`}},
		{"empty", nil, []string{"no files"}},
		{"many files", []string{"a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9", "b1"}, []string{`"a1"`, "… 2 more"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range c.files {
				p := filepath.Join(dir, f)
				os.MkdirAll(filepath.Dir(p), 0o755)
				os.WriteFile(p, []byte("x"), 0o644)
			}
			_, err := Detect(dir)
			if failure.KindOf(err) != failure.UnsupportedToolchain {
				t.Fatalf("Detect = %v, want UnsupportedToolchain", err)
			}
			msg := failure.Message(err)
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q lacks %q", msg, w)
				}
			}
			if strings.Contains(msg, dir) {
				t.Errorf("message names the server path: %q", msg)
			}
		})
	}
}
