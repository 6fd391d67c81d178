package source

import (
	"testing"
)

// BenchmarkCloneFile is the clone phase of a build from a tiny file://
// repository (issue 16's fixed cost): the default branch, as `repo_ref`
// "main" or none.
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
