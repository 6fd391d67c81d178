package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kettle-build/kettle/bench/harness"
	"github.com/kettle-build/kettle/internal/testenv"
)

// TestSeedStreamClientLongLines (issue 18): the seed's JavaScript client
// for POST /build/stream, verbatim (testdata/clients/seed-stream-client.js),
// runs under node against a real `kettle serve` building a crate whose
// build script prints lines of 3 KB and 300 KB. The client parses every
// read on its own; it must see no parse error, the 3 KB line arrives as one
// event and the 300 KB line as bounded pieces that join back into it.
func TestSeedStreamClientLongLines(t *testing.T) {
	node := testenv.NeedTool(t, "node")
	testenv.NeedTool(t, "cargo")
	testenv.NeedTool(t, "git")
	repo := filepath.Join(t.TempDir(), "longlines")
	project(t, repo, "longlines", 0)
	buildRS := `fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:warning=L3K{}E", "a".repeat(3000));
    println!("cargo:warning=L300K{}E", "b".repeat(300_000));
}
`
	if err := os.WriteFile(filepath.Join(repo, "build.rs"), []byte(buildRS), 0o644); err != nil {
		t.Fatal(err)
	}
	git(t, repo, "init", "-q", "-b", "main")
	git(t, repo, "add", ".")
	git(t, repo, "commit", "-q", "-m", "long lines")

	_, c := server(t, "")
	harness.WaitReady(t, c)
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	for run := 0; run < 3; run++ { // the issue saw 3 crashes out of 3
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		cmd := exec.CommandContext(ctx, node, filepath.Join(root, "testdata", "clients", "seed-stream-client.js"), c.URL, repo, "main")
		out, err := cmd.CombinedOutput()
		cancel()
		text := string(out)
		if err != nil || strings.Contains(text, "SyntaxError") {
			t.Fatalf("seed client run %d: %v\n%s", run, err, tailBytes(text, 2000))
		}
		if !strings.Contains(text, `Build complete: {"build_id"`) || !strings.Contains(text, `"status":"success"`) {
			t.Fatalf("run %d: no successful complete:\n%s", run, tailBytes(text, 2000))
		}
		lines := strings.Split(text, "\n")
		var got3k, joined300k string
		for i, l := range lines {
			if strings.Contains(l, "L3K") {
				got3k = l
			}
			if j := strings.Index(l, "L300K"); j >= 0 {
				// The client prints each piece on a line of its own.
				var b strings.Builder
				b.WriteString(l[j:])
				for _, p := range lines[i+1:] {
					if b.Len() > 0 && strings.HasSuffix(b.String(), "E") {
						break
					}
					if len(p) > 4096 {
						t.Fatalf("a piece of %d bytes: events are not bounded", len(p))
					}
					b.WriteString(p)
				}
				joined300k = b.String()
			}
		}
		if !strings.HasSuffix(got3k, "L3K"+strings.Repeat("a", 3000)+"E") {
			t.Fatalf("run %d: the 3 KB line did not arrive whole in one event (%d bytes)", run, len(got3k))
		}
		if joined300k != "L300K"+strings.Repeat("b", 300_000)+"E" {
			t.Fatalf("run %d: the 300 KB line's pieces do not join back (%d bytes)", run, len(joined300k))
		}
	}
}

func tailBytes(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
