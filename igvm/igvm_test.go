package igvm_test

import (
	"bytes"
	"crypto/sha512"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kettle-build/kettle/igvm"
	"github.com/kettle-build/kettle/igvm/igvmtest"
)

var le = leBytes{}

type leBytes struct{}

func (leBytes) u32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

// reseal recomputes the checksum after a test edits the headers.
func reseal(b []byte) []byte {
	fixed := 24
	if b[4] == 2 {
		fixed = 32
	}
	vhOff := int(b[8]) | int(b[9])<<8 | int(b[10])<<16 | int(b[11])<<24
	vhSize := int(b[12]) | int(b[13])<<8 | int(b[14])<<16 | int(b[15])<<24
	h := crc32.NewIEEE()
	hdr := append([]byte(nil), b[:fixed]...)
	le.u32(hdr[20:], 0)
	h.Write(hdr)
	h.Write(b[vhOff : vhOff+vhSize])
	le.u32(b[20:], h.Sum32())
	return b
}

func TestRoundTrip(t *testing.T) {
	for _, rev := range []uint32{1, 2} {
		f := igvmtest.Guest("console=hvc0 roothash=" + strings.Repeat("ab", 32))
		f.Revision = rev
		b, err := f.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		g, err := igvm.Parse(b)
		if err != nil {
			t.Fatalf("rev %d: %v", rev, err)
		}
		if g.Revision != rev || len(g.Directives) != len(f.Directives) || len(g.Platforms) != 1 {
			t.Fatalf("rev %d: parsed %+v", rev, g)
		}
		b2, err := g.Marshal()
		if err != nil || !bytes.Equal(b, b2) {
			t.Fatalf("rev %d: re-marshal differs (%v)", rev, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	good := igvmtest.GuestBytes("roothash=" + strings.Repeat("00", 32))
	// Offsets in good: fixed header 32; the first variable header (platform)
	// at 32, its body at 40.
	tests := []struct {
		name string
		edit func([]byte) []byte
		want string
	}{
		{"empty", func([]byte) []byte { return nil }, "shorter than the fixed header"},
		{"magic", func(b []byte) []byte { b[0] = 'X'; return b }, "bad magic"},
		{"version", func(b []byte) []byte { b[4] = 3; return reseal(b) }, "format version 3"},
		{"aarch64", func(b []byte) []byte { b[24] = 1; return reseal(b) }, "not x64"},
		{"page size", func(b []byte) []byte { b[29] = 0x20; return reseal(b) }, "page size"},
		{"checksum", func(b []byte) []byte { b[20] ^= 1; return b }, "checksum"},
		{"truncated", func(b []byte) []byte { return b[:len(b)-1] }, "total_file_size"},
		{"header size", func(b []byte) []byte { b[12] = 0xff; b[13] = 0xff; b[14] = 0xff; return b }, "outside the file"},
		{"unknown type", func(b []byte) []byte { b[32] = 0x77; return reseal(b) }, "unknown variable header type"},
		{"length", func(b []byte) []byte { b[36] = 17; return reseal(b) }, "length 17, want 16"},
		{"mask bits", func(b []byte) []byte { b[40] = 3; return reseal(b) }, "not a single unused bit"},
		{"platform type", func(b []byte) []byte { b[45] = 9; return reseal(b) }, "unknown platform type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := igvm.Parse(tc.edit(append([]byte(nil), good...)))
			if !errors.Is(err, igvm.ErrFormat) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrFormat containing %q", err, tc.want)
			}
		})
	}
}

func TestDirectiveRules(t *testing.T) {
	page := func(gpa uint64, mask uint32) igvm.Header {
		return igvm.Header{Type: igvm.TypePageData, GPA: gpa, CompatibilityMask: mask}
	}
	tests := []struct {
		name string
		dirs []igvm.Header
		want string
	}{
		{"unaligned gpa", []igvm.Header{page(0x1001, 1)}, "not page aligned"},
		{"undeclared mask", []igvm.Header{page(0x1000, 2)}, "names no declared platform"},
		{"zero mask", []igvm.Header{page(0x1000, 0)}, "names no declared platform"},
		{"insert undeclared", []igvm.Header{{Type: igvm.TypeParameterInsert, GPA: 0x1000, CompatibilityMask: 1, AreaIndex: 3}}, "undeclared area 3"},
		{"area twice", []igvm.Header{
			{Type: igvm.TypeParameterArea, AreaIndex: 1, AreaBytes: 4096},
			{Type: igvm.TypeParameterArea, AreaIndex: 1, AreaBytes: 4096}}, "declared twice"},
		{"area too big", []igvm.Header{{Type: igvm.TypeParameterArea, AreaIndex: 1, AreaBytes: 1 << 40}}, "bytes (want"},
		{"insert twice", []igvm.Header{
			{Type: igvm.TypeParameterArea, AreaIndex: 1, AreaBytes: 4096},
			{Type: igvm.TypeParameterInsert, GPA: 0x1000, CompatibilityMask: 1, AreaIndex: 1},
			{Type: igvm.TypeParameterInsert, GPA: 0x2000, CompatibilityMask: 1, AreaIndex: 1}}, "inserted twice"},
		{"parameter offset", []igvm.Header{
			{Type: igvm.TypeParameterArea, AreaIndex: 1, AreaBytes: 8},
			{Type: igvm.TypeVPCount, AreaIndex: 1, ByteOffset: 8}}, "outside parameter area"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &igvm.File{Revision: 2, Platforms: []igvm.Platform{{CompatibilityMask: 1, Type: igvm.PlatformSEVSNP, Version: 1}},
				Directives: append(tc.dirs, igvm.Header{Type: igvm.TypePageData, GPA: 0x9000, CompatibilityMask: 1, Data: make([]byte, 4096)})}
			b, err := f.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := igvm.Parse(b); !errors.Is(err, igvm.ErrFormat) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestQEMUOrder checks the QEMU loader's order against a hand-written page
// list: a parameter insert after a run of pages is measured before the run,
// zero pages are NORMAL with the zero-page hash, pages of another platform
// are skipped, and the VMSA comes last at VMSAGPA with KVM's CR4/RFLAGS.
func TestQEMUOrder(t *testing.T) {
	data := bytes.Repeat([]byte{0xaa}, 4096)
	vmsa := make([]byte, 4096)
	vmsa[0x148], vmsa[0x170] = 0x11, 0x22 // KVM replaces these
	f := &igvm.File{Revision: 2, Platforms: []igvm.Platform{
		{CompatibilityMask: 1, Type: igvm.PlatformSEVSNP, Version: 1},
		{CompatibilityMask: 2, Type: igvm.PlatformTDX, Version: 1}},
		Directives: []igvm.Header{
			{Type: igvm.TypeParameterArea, AreaIndex: 0, AreaBytes: 2 * 4096},
			{Type: igvm.TypePageData, GPA: 0x1000, CompatibilityMask: 1, Data: data},
			{Type: igvm.TypePageData, GPA: 0x2000, CompatibilityMask: 1},
			{Type: igvm.TypePageData, GPA: 0x3000, CompatibilityMask: 2, Data: data}, // TDX only
			{Type: igvm.TypeParameterInsert, GPA: 0x8000, CompatibilityMask: 1, AreaIndex: 0},
			{Type: igvm.TypeVPContext, GPA: 0x5000, CompatibilityMask: 1, VPIndex: 0, Data: vmsa},
			{Type: igvm.TypePageData, GPA: 0x6000, CompatibilityMask: 3, Flags: igvm.FlagUnmeasured},
			{Type: igvm.TypePageData, GPA: 0x7000, CompatibilityMask: 1, DataType: igvm.DataSecrets},
			{Type: igvm.TypePageData, GPA: 0x9000, CompatibilityMask: 1, DataType: igvm.DataCPUID, Data: data},
		}}
	b, err := f.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if f, err = igvm.Parse(b); err != nil {
		t.Fatal(err)
	}
	kvm := append([]byte(nil), vmsa...)
	kvm[0x148], kvm[0x170] = 0x40, 0x02
	zero := sha512.Sum384(make([]byte, 4096))
	want := []igvm.Page{
		{GPA: 0x8000, Type: igvm.PageUnmeasured},
		{GPA: 0x9000 - 0x1000, Type: igvm.PageUnmeasured},
		{GPA: 0x1000, Type: igvm.PageNormal, Contents: sha512.Sum384(data)},
		{GPA: 0x2000, Type: igvm.PageNormal, Contents: zero},
		{GPA: 0x6000, Type: igvm.PageUnmeasured},
		{GPA: 0x7000, Type: igvm.PageSecrets},
		{GPA: 0x9000, Type: igvm.PageCPUID},
		{GPA: igvm.VMSAGPA, Type: igvm.PageVMSA, Contents: sha512.Sum384(kvm)},
	}
	want[1].GPA = 0x9000 // the second page of the parameter area
	got, n, err := f.SNPPages(igvm.QEMU)
	if err != nil {
		t.Fatal(err)
	}
	if n != 7 || len(got) != len(want) {
		t.Fatalf("got %d pages (%d before VMSAs): %+v", len(got), n, got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("page %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	var d igvm.Digest
	for _, p := range want {
		d = igvm.PageInfo(d, p)
	}
	m, err := f.SNPLaunchDigest(igvm.QEMU)
	if err != nil || m.Digest != d || m.Pages != 7 || m.VMSAs != 1 {
		t.Fatalf("digest %v %+v, want %s", err, m, d)
	}
	// Direct: file order, zero page as PAGE_TYPE_ZERO, VMSA bytes as given.
	got, _, err = f.SNPPages(igvm.Direct)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].GPA != 0x1000 || got[1] != (igvm.Page{GPA: 0x2000, Type: igvm.PageZero}) || got[2].GPA != 0x8000 ||
		got[len(got)-1].Contents != sha512.Sum384(vmsa) {
		t.Fatalf("direct pages %+v", got)
	}
}

// TestPageInfo pins the PAGE_INFO layout with sev-snp-measure's OVMF hash:
// SHA-384 chain over the AmdSev fixture's one page at 0xFFFFF000.
func TestPageInfo(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "gen", "ovmf_AmdSev_suffix.bin"))
	if err != nil {
		t.Fatal(err)
	}
	d := igvm.PageInfo(igvm.Digest{}, igvm.Page{GPA: 0xFFFFF000, Type: igvm.PageNormal, Contents: sha512.Sum384(b)})
	if got := d.String(); got != "086e2e9149ebf45abdc3445fba5b2da8270bdbb04094d7a2c37faaa4b24af3aa16aff8c374c2a55c467a50da6d466b74" {
		t.Fatalf("ovmf hash %s", got)
	}
}

func TestNoSNP(t *testing.T) {
	f := &igvm.File{Revision: 2, Platforms: []igvm.Platform{{CompatibilityMask: 1, Type: igvm.PlatformTDX, Version: 1}},
		Directives: []igvm.Header{{Type: igvm.TypePageData, GPA: 0x1000, CompatibilityMask: 1, Data: make([]byte, 4096)}}}
	if _, err := f.SNPLaunchDigest(igvm.QEMU); !errors.Is(err, igvm.ErrNoSNP) {
		t.Fatalf("err = %v", err)
	}
	if _, err := f.KernelCmdline(); !errors.Is(err, igvm.ErrNoSNP) {
		t.Fatalf("err = %v", err)
	}
}

func TestTwoMiBRefused(t *testing.T) {
	f := igvmtest.Guest("x")
	f.Directives[1].Flags = igvm.Flag2MB
	if _, err := f.SNPLaunchDigest(igvm.QEMU); !errors.Is(err, igvm.ErrFormat) {
		t.Fatalf("err = %v", err)
	}
}

func TestKernelCmdline(t *testing.T) {
	const cmd = "console=hvc0 roothash=" + "695be9124b1f2043c8ea1e248a98792cf003002b95610061d5b27de0c77ea741" + " quiet"
	f, err := igvm.Parse(igvmtest.GuestBytes(cmd))
	if err != nil {
		t.Fatal(err)
	}
	got, err := f.KernelCmdline()
	if err != nil || got != cmd {
		t.Fatalf("cmdline %q, %v", got, err)
	}
	rh, err := igvm.RootHash(got)
	if err != nil || rh != "695be9124b1f2043c8ea1e248a98792cf003002b95610061d5b27de0c77ea741" {
		t.Fatalf("roothash %q %v", rh, err)
	}
}

// kernelPages returns the indexes of the UKI's page directives.
func kernelPages(f *igvm.File) []int {
	var out []int
	for i, h := range f.Directives {
		if h.Type == igvm.TypePageData && h.GPA >= igvmtest.KernelGPA {
			out = append(out, i)
		}
	}
	return out
}

// TestKernelCmdlineOnlyMeasured: a command line must come from memory whose
// contents the digest binds. Each attack keeps the launch digest (or
// controls host-filled memory) while changing what a reader like the
// peer's would extract.
func TestKernelCmdlineOnlyMeasured(t *testing.T) {
	const cmd = "roothash=" + "11" + "22222222222222222222222222222222222222222222222222222222222222"
	tests := []struct {
		name string
		edit func(f *igvm.File)
		want string
	}{
		{"UKI page unmeasured", func(f *igvm.File) {
			// Unmeasured pages contribute their address, not their bytes:
			// the file could carry any command line there.
			for _, i := range kernelPages(f) {
				f.Directives[i].Flags = igvm.FlagUnmeasured
			}
		}, "not measured content"},
		{"HOB page unmeasured", func(f *igvm.File) { f.Directives[1].Flags = igvm.FlagUnmeasured }, "no kernel HOB"},
		{"UKI in another platform's pages", func(f *igvm.File) {
			f.Platforms = append(f.Platforms, igvm.Platform{CompatibilityMask: 2, Type: igvm.PlatformTDX, Version: 1})
			for _, i := range kernelPages(f) {
				f.Directives[i].CompatibilityMask = 2
			}
		}, "not measured content"},
		{"UKI page under a parameter insert", func(f *igvm.File) {
			for i, h := range f.Directives {
				if h.Type == igvm.TypeParameterInsert {
					f.Directives[i].GPA = igvmtest.KernelGPA
				}
			}
		}, "not measured content"},
		{"two measured pages at one GPA", func(f *igvm.File) {
			d := f.Directives[kernelPages(f)[0]]
			f.Directives = append(f.Directives[:len(f.Directives)-1], d, f.Directives[len(f.Directives)-1])
		}, "two measured pages"},
		{"two kernel HOBs", func(f *igvm.File) {
			hob := append([]byte(nil), f.Directives[1].Data...)
			copy(hob[0x90:], igvmtest.HOBEntry(0x300000, 4096, igvm.HOBKernel))
			f.Directives[1].Data = hob
		}, "two kernel HOB entries"},
		{"absurd length", func(f *igvm.File) {
			hob := append([]byte(nil), f.Directives[1].Data...)
			copy(hob[0x30:], igvmtest.HOBEntry(igvmtest.KernelGPA, 1<<62, igvm.HOBKernel))
			f.Directives[1].Data = hob
		}, "more than the measured memory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := igvmtest.Guest(cmd)
			tc.edit(f)
			b, err := f.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			g, err := igvm.Parse(b)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := g.KernelCmdline(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("cmdline %q, err %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestRootHash(t *testing.T) {
	h64 := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		cmd, want string
		ok        bool
	}{
		{"a roothash=" + h64 + " b", h64, true},
		{"roothash=" + strings.ToUpper(strings.Repeat("cd", 64)), strings.Repeat("cd", 64), true},
		{"quiet", "", false},
		{"roothash=" + h64 + " roothash=" + h64, "", false},
		{"roothash=xyz", "", false},
		{"roothash=" + h64[:62], "", false},
	} {
		got, err := igvm.RootHash(tc.cmd)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("RootHash(%q) = %q, %v", tc.cmd, got, err)
		}
	}
}

func TestPECmdline(t *testing.T) {
	uki := igvmtest.UKI("a b")
	if s, err := igvm.PECmdline(uki); err != nil || s != "a b" {
		t.Fatalf("%q %v", s, err)
	}
	bad := append([]byte(nil), uki...)
	copy(bad[0x80+4+20+0xf0:], ".text\x00\x00\x00")
	if _, err := igvm.PECmdline(bad); !errors.Is(err, igvm.ErrNoCmdline) {
		t.Fatalf("no section: %v", err)
	}
	bad = append([]byte(nil), uki...)
	bad[0x80+4+20+0xf0+20+3] = 0x7f // PointerToRawData far outside
	if _, err := igvm.PECmdline(bad); !errors.Is(err, igvm.ErrFormat) {
		t.Fatalf("out of bounds: %v", err)
	}
	if _, err := igvm.PECmdline([]byte("MZ")); err == nil {
		t.Fatal("short image accepted")
	}
}
