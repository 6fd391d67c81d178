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
// With reseal the checksum is recomputed first, so that mutations reach the
// header parsers.
func FuzzParse(f *testing.F) {
	f.Add(igvmtest.GuestBytes("roothash=00"), false)
	f.Add(igvmtest.GuestBytes("roothash=00"), true)
	g := igvmtest.Guest("x")
	g.Revision = 1
	b, _ := g.Marshal()
	f.Add(b, true)
	if b, err := os.ReadFile(filepath.Join("testdata", "snp", "snp_with_ovmfx64_without_default.igvm")); err == nil {
		f.Add(b, true)
	}
	f.Fuzz(func(t *testing.T, b []byte, fix bool) {
		if fix {
			b = resealChecked(b)
		}
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

// resealChecked is reseal for arbitrary bytes: unchanged when the header
// fields needed are out of range.
func resealChecked(b []byte) []byte {
	if len(b) < 32 || (b[4] != 1 && b[4] != 2) {
		return b
	}
	vhOff := uint64(b[8]) | uint64(b[9])<<8 | uint64(b[10])<<16 | uint64(b[11])<<24
	vhSize := uint64(b[12]) | uint64(b[13])<<8 | uint64(b[14])<<16 | uint64(b[15])<<24
	if vhOff+vhSize > uint64(len(b)) {
		return b
	}
	return reseal(append([]byte(nil), b...))
}
