// Command gen writes the IGVM files of igvm/testdata/snp: the page lists of
// virtee/sev-snp-measure's tests/test_guest.py SNP cases (QEMU, EC2 and GCE
// layouts; 1 and 4 vCPUs; with and without kernel hashes) expressed as IGVM
// directives. The launch digests those tests publish are asserted by
// igvm's TestSevSNPMeasureVectors.
//
// The OVMF inputs are sev-snp-measure's fixtures (the last 4 KiB of edk2's
// AmdSevX64 and OvmfPkgX64 builds), copied here. Run from the igvm
// directory:
//
//	go run ./testdata/gen
package main

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"

	"github.com/kettle-build/kettle/igvm"
)

var le = binary.LittleEndian

type vmm int

const (
	qemu vmm = iota
	ec2
	gce
)

// vector is one test_guest.py SNP case.
type vector struct {
	name     string
	ovmf     string
	vcpus    int
	vcpuSig  uint64 // 0 for GCE (its VMM uses 0x600)
	features uint64
	vmm      vmm
	kernel   bool   // -kernel /dev/null -initrd /dev/null
	append   string // the kernel command line
}

// EPYC-v4: family 23, model 1, stepping 2.
const epycV4 = 0x800f12

const amdSev, ovmfX64 = "ovmf_AmdSev_suffix.bin", "ovmf_OvmfX64_suffix.bin"

var vectors = []vector{
	{"snp_ovmf_hash_gen_default", amdSev, 1, epycV4, 0x21, qemu, true, ""},
	{"snp_ovmf_hash_gen_feature_snp_only", amdSev, 1, epycV4, 0x1, qemu, true, ""},
	{"snp_ovmf_hash_full_default", amdSev, 1, epycV4, 0x21, qemu, true, "console=ttyS0 loglevel=7"},
	{"snp_ovmf_hash_full_feature_snp_only", amdSev, 1, epycV4, 0x1, qemu, true, "console=ttyS0 loglevel=7"},
	{"snp_ec2_default", amdSev, 1, epycV4, 0x21, ec2, true, ""},
	{"snp_ec2_feature_snp_only", amdSev, 1, epycV4, 0x1, ec2, true, ""},
	{"snp_gce_default", amdSev, 1, 0, 0x1, gce, true, ""},
	{"snp_gce_with_multiple_vcpus_default", amdSev, 4, 0, 0x1, gce, true, ""},
	{"snp_default", amdSev, 1, epycV4, 0x21, qemu, true, "console=ttyS0 loglevel=7"},
	{"snp_guest_feature_snp_only", amdSev, 1, epycV4, 0x1, qemu, true, "console=ttyS0 loglevel=7"},
	{"snp_without_kernel_default", amdSev, 1, epycV4, 0x21, qemu, false, ""},
	{"snp_without_kernel_feature_snp_only", amdSev, 1, epycV4, 0x1, qemu, false, ""},
	{"snp_with_multiple_vcpus_default", amdSev, 4, epycV4, 0x21, qemu, true, ""},
	{"snp_with_multiple_vcpus_feature_snp_only", amdSev, 4, epycV4, 0x1, qemu, true, ""},
	{"snp_with_ovmfx64_without_default", ovmfX64, 1, epycV4, 0x21, qemu, false, ""},
	{"snp_with_ovmfx64_without_kernel_feature_snp_only", ovmfX64, 1, epycV4, 0x1, qemu, false, ""},
}

func main() {
	for _, v := range vectors {
		b, err := build(v)
		if err != nil {
			log.Fatalf("%s: %v", v.name, err)
		}
		out := filepath.Join("testdata", "snp", v.name+".igvm")
		if err := os.WriteFile(out, b, 0o644); err != nil {
			log.Fatal(err)
		}
	}
}

// guid returns the on-disk (mixed-endian) bytes of a textual GUID.
func guid(s string) [16]byte {
	raw, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(raw) != 16 {
		panic("bad GUID " + s)
	}
	var g [16]byte
	g[0], g[1], g[2], g[3] = raw[3], raw[2], raw[1], raw[0]
	g[4], g[5], g[6], g[7] = raw[5], raw[4], raw[7], raw[6]
	copy(g[8:], raw[8:])
	return g
}

var (
	footerGUID    = guid("96b582de-1fb2-45f7-baea-a366c55a082d")
	hashTableGUID = guid("7255371f-3a3b-4b04-927b-1da6efa8d454")
	resetGUID     = guid("00f771de-1a7e-4fcb-890e-68c77e2fb44e")
	metadataGUID  = guid("dc886566-984a-4798-a75e-5585a7bf67cc")
)

type section struct{ gpa, size, typ uint32 }

const (
	secMem     = 1
	secSecrets = 2
	secCPUID   = 3
	secCAA     = 4
	secHashes  = 0x10
)

type ovmf struct {
	data     []byte
	table    map[[16]byte][]byte
	sections []section
}

// parseOVMF reads OVMF's GUIDed footer table (it ends 32 bytes before the
// end of the image) and the SEV metadata it points to.
func parseOVMF(b []byte) (*ovmf, error) {
	o := &ovmf{data: b, table: map[[16]byte][]byte{}}
	const entryHdr = 18
	start := len(b) - 32 - entryHdr
	var g [16]byte
	copy(g[:], b[start+2:start+18])
	if g != footerGUID {
		return nil, fmt.Errorf("no OVMF footer table")
	}
	tsize := int(le.Uint16(b[start:])) - entryHdr
	tb := b[start-tsize : start]
	for len(tb) >= entryHdr {
		e := tb[len(tb)-entryHdr:]
		n := int(le.Uint16(e))
		if n < entryHdr || n > len(tb) {
			return nil, fmt.Errorf("bad footer entry size %d", n)
		}
		copy(g[:], e[2:18])
		o.table[g] = tb[len(tb)-n : len(tb)-entryHdr]
		tb = tb[:len(tb)-n]
	}
	if e, ok := o.table[metadataGUID]; ok {
		off := len(b) - int(le.Uint32(e))
		h := b[off:]
		if string(h[:4]) != "ASEV" || le.Uint32(h[8:]) != 1 {
			return nil, fmt.Errorf("bad SEV metadata header")
		}
		for i := 0; i < int(le.Uint32(h[12:])); i++ {
			d := h[16+12*i:]
			o.sections = append(o.sections, section{le.Uint32(d), le.Uint32(d[4:]), le.Uint32(d[8:])})
		}
	}
	return o, nil
}

func (o *ovmf) u32(g [16]byte) uint32 {
	e, ok := o.table[g]
	if !ok || len(e) < 4 {
		return 0
	}
	return le.Uint32(e)
}

// hashesPage is QEMU's SEV hashes table (header GUID, length, then the
// cmdline, initrd and kernel SHA-256 entries, padded to 16 bytes) at its
// offset in the page.
func hashesPage(offset int, kernel, initrd []byte, cmdline string) []byte {
	entry := func(g string, data []byte) []byte {
		s := sha256.Sum256(data)
		id := guid(g)
		e := append(id[:], 0, 0)
		le.PutUint16(e[16:], 50)
		return append(e, s[:]...)
	}
	cl := append([]byte(cmdline), 0)
	hdr := guid("9438d606-4f22-4cc9-b479-a793d411fd21")
	t := append(hdr[:], 0, 0)
	le.PutUint16(t[16:], 18+3*50)
	t = append(t, entry("97d02dd8-bd20-4c94-aa78-e7714d36ab2a", cl)...)
	t = append(t, entry("44baf731-3a2f-4bd7-9af1-41e29169781d", initrd)...)
	t = append(t, entry("4de79437-abd2-427f-b835-d5b172d2045b", kernel)...)
	for len(t)%16 != 0 {
		t = append(t, 0)
	}
	p := make([]byte, igvm.PageSize)
	copy(p[offset:], t)
	return p
}

// vmsa builds the initial VMSA sev-snp-measure computes for a vCPU
// starting at eip under the given VMM.
func vmsa(eip uint32, features, sig uint64, m vmm) []byte {
	p := make([]byte, igvm.PageSize)
	seg := func(off int, sel, attr uint16, limit uint32, base uint64) {
		le.PutUint16(p[off:], sel)
		le.PutUint16(p[off+2:], attr)
		le.PutUint32(p[off+4:], limit)
		le.PutUint64(p[off+8:], base)
	}
	gpat := uint64(0x7040600070406)
	csFlags, ssFlags, trFlags := uint16(0x9b), uint16(0x93), uint16(0x8b)
	rdx, mxcsr, fcw := sig, uint32(0x1f80), uint16(0x37f)
	switch m {
	case ec2:
		if eip == 0xfffffff0 {
			csFlags = 0x9a
		}
		ssFlags, trFlags = 0x92, 0x83
		rdx, mxcsr, fcw = 0x600, 0, 0
	case gce:
		gpat = 0x00070106
		rdx, mxcsr, fcw = 0x600, 0, 0
	}
	seg(0x00, 0, 0x93, 0xffff, 0)                              // es
	seg(0x10, 0xf000, csFlags, 0xffff, uint64(eip&0xffff0000)) // cs
	seg(0x20, 0, ssFlags, 0xffff, 0)                           // ss
	seg(0x30, 0, 0x93, 0xffff, 0)                              // ds
	seg(0x40, 0, 0x93, 0xffff, 0)                              // fs
	seg(0x50, 0, 0x93, 0xffff, 0)                              // gs
	seg(0x60, 0, 0, 0xffff, 0)                                 // gdtr
	seg(0x70, 0, 0x82, 0xffff, 0)                              // ldtr
	seg(0x80, 0, 0, 0xffff, 0)                                 // idtr
	seg(0x90, 0, trFlags, 0xffff, 0)                           // tr
	le.PutUint64(p[0xd0:], 0x1000)                             // efer: SVME
	le.PutUint64(p[0x148:], 0x40)                              // cr4: MCE
	le.PutUint64(p[0x158:], 0x10)                              // cr0
	le.PutUint64(p[0x160:], 0x400)                             // dr7
	le.PutUint64(p[0x168:], 0xffff0ff0)                        // dr6
	le.PutUint64(p[0x170:], 0x2)                               // rflags
	le.PutUint64(p[0x178:], uint64(eip&0xffff))                // rip
	le.PutUint64(p[0x268:], gpat)                              // g_pat
	le.PutUint64(p[0x310:], rdx)                               // rdx
	le.PutUint64(p[0x3b0:], features)                          // sev_features
	le.PutUint64(p[0x3e8:], 1)                                 // xcr0
	le.PutUint32(p[0x408:], mxcsr)                             // mxcsr
	le.PutUint16(p[0x410:], fcw)                               // x87_fcw
	return p
}

func build(v vector) ([]byte, error) {
	raw, err := os.ReadFile(filepath.Join("testdata", "gen", v.ovmf))
	if err != nil {
		return nil, err
	}
	o, err := parseOVMF(raw)
	if err != nil {
		return nil, err
	}
	const mask = 1
	f := &igvm.File{
		Revision:       2,
		Platforms:      []igvm.Platform{{CompatibilityMask: mask, Type: igvm.PlatformSEVSNP, Version: 1}},
		Initialization: []igvm.Header{{Type: igvm.TypeGuestPolicy, Policy: 0x30000, CompatibilityMask: mask}},
	}
	page := func(gpa uint64, flags uint32, dt igvm.PageDataType, data []byte) {
		f.Directives = append(f.Directives, igvm.Header{Type: igvm.TypePageData, GPA: gpa,
			CompatibilityMask: mask, Flags: flags, DataType: dt, Data: data})
	}
	pages := func(s section, flags uint32) error {
		if s.size%igvm.PageSize != 0 {
			return fmt.Errorf("section %+v is not whole pages", s)
		}
		for off := uint32(0); off < s.size; off += igvm.PageSize {
			page(uint64(s.gpa+off), flags, igvm.DataNormal, nil)
		}
		return nil
	}
	// The firmware: NORMAL pages ending at 4 GiB.
	base := uint64(1<<32) - uint64(len(raw))
	for off := 0; off < len(raw); off += igvm.PageSize {
		page(base+uint64(off), 0, igvm.DataNormal, raw[off:off+igvm.PageSize])
	}
	hasHashes := false
	for _, s := range o.sections {
		switch s.typ {
		case secMem:
			flags := uint32(0) // a zero page
			if v.vmm == gce {
				flags = igvm.FlagUnmeasured
			}
			if err := pages(s, flags); err != nil {
				return nil, err
			}
		case secSecrets:
			page(uint64(s.gpa), 0, igvm.DataSecrets, nil)
		case secCPUID:
			if v.vmm != ec2 {
				page(uint64(s.gpa), 0, igvm.DataCPUID, nil)
			}
		case secHashes:
			hasHashes = true
			if !v.kernel {
				if err := pages(s, 0); err != nil {
					return nil, err
				}
				continue
			}
			off := int(o.u32(hashTableGUID) & 0xfff)
			if s.size != igvm.PageSize {
				return nil, fmt.Errorf("kernel hashes section of %d bytes", s.size)
			}
			page(uint64(s.gpa), 0, igvm.DataNormal, hashesPage(off, nil, nil, v.append))
		case secCAA:
			if err := pages(s, 0); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("unknown section type %d", s.typ)
		}
	}
	if v.vmm == ec2 {
		// EC2 launches the CPUID page last.
		for _, s := range o.sections {
			if s.typ == secCPUID {
				page(uint64(s.gpa), 0, igvm.DataCPUID, nil)
			}
		}
	}
	if v.kernel && !hasHashes {
		return nil, fmt.Errorf("kernel given but OVMF has no SNP_KERNEL_HASHES section")
	}
	apEIP := o.u32(resetGUID)
	for i := 0; i < v.vcpus; i++ {
		eip := uint32(0xfffffff0)
		if i > 0 {
			eip = apEIP
		}
		f.Directives = append(f.Directives, igvm.Header{Type: igvm.TypeVPContext, GPA: igvm.VMSAGPA,
			CompatibilityMask: mask, VPIndex: uint16(i), Data: vmsa(eip, v.features, v.vcpuSig, v.vmm)})
	}
	return f.Marshal()
}
