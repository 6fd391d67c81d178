package source

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// BenchmarkCloneFile is the clone phase of a build from a tiny file://
// repository (issue 16's fixed cost): the default branch, as `repo_ref`
// "main" or none. copyLocal makes it (one git process, read-tree).
func BenchmarkCloneFile(b *testing.B) {
	r := makeRepo(b, "proj", nil)
	url := "file://" + r.base + "/proj.git"
	for b.Loop() {
		work := b.TempDir()
		if _, err := Clone(b.Context(), url, "main", work, localPolicy); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGitCloneFile is what BenchmarkCloneFile cost before copyLocal,
// and what any other transport still costs at least: the same `git clone`
// with kettle's arguments and environment and nothing else.
// (Most of it is git starting its processes: the clone itself, sh,
// upload-pack, pack-objects, index-pack and the connectivity check's
// rev-list.)
func BenchmarkGitCloneFile(b *testing.B) {
	r := makeRepo(b, "proj", nil)
	url := "file://" + r.base + "/proj.git"
	for b.Loop() {
		root := b.TempDir()
		g := &gitCmd{root: root, home: b.TempDir(), local: true}
		cmd := exec.Command("git", g.args("clone", "--depth=1", "--no-tags", "--single-branch", "--no-local", "--template=", "--quiet", "--branch", "main", "--", url, filepath.Join(root, "proj"))...)
		cmd.Dir, cmd.Env = root, g.env()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%v %s", err, out)
		}
	}
}
