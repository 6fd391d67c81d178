package igvm_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/kettle-build/kettle/igvm"
	"github.com/kettle-build/kettle/igvm/igvmtest"
)

// FuzzParse: no input panics or hangs Parse, the digest or the command-line
// reader, and whatever parses re-marshals to a file with the same digest.
func FuzzParse(f *testing.F) {
	f.Add(igvmtest.GuestBytes("roothash=00"))
	g := igvmtest.Guest("x")
	g.Revision = 1
	b, _ := g.Marshal()
	f.Add(b)
	files, _ := filepath.Glob(filepath.Join("testdata", "snp", "*.igvm"))
	for _, p := range files[:2] {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		file, err := igvm.Parse(b)
		if err != nil {
			return
		}
		m1, err1 := file.SNPLaunchDigest(igvm.QEMU)
		file.SNPLaunchDigest(igvm.Direct)
		file.KernelCmdline()
		out, err := file.Marshal()
		if err != nil {
			return // pass-through headers the writer does not rebuild
		}
		again, err := igvm.Parse(out)
		if err != nil {
			t.Fatalf("re-marshalled file does not parse: %v", err)
		}
		m2, err2 := again.SNPLaunchDigest(igvm.QEMU)
		if (err1 == nil) != (err2 == nil) || m1 != m2 {
			t.Fatalf("digest changed across marshal: %v %v / %v %v", m1, err1, m2, err2)
		}
	})
}
