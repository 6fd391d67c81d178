package igvm

import (
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
)

// SNP page types of the PAGE_INFO structure (AMD SEV-SNP firmware ABI,
// SNP_LAUNCH_UPDATE).
const (
	PageNormal     = 0x01
	PageVMSA       = 0x02
	PageZero       = 0x03
	PageUnmeasured = 0x04
	PageSecrets    = 0x05
	PageCPUID      = 0x06
)

// VMSAGPA is where KVM records every VMSA page in the launch digest: the
// RMP entry of GPA (u64)-1, page aligned and cut to 52 bits.
const VMSAGPA = 0xFFFFFFFFF000

// ErrNoSNP: the file declares no SEV-SNP platform.
var ErrNoSNP = errors.New("igvm: the file has no SEV-SNP platform")

// Loader says how the VMM turns IGVM directives into SNP_LAUNCH_UPDATE
// calls, which decides the digest.
type Loader int

const (
	// QEMU is QEMU's IGVM backend on KVM (the peer's model, and the
	// default): runs of consecutive page-data directives are measured as one
	// region when the run ends, so a parameter insert that follows a run is
	// measured before it; a page without file data is a zero-filled NORMAL
	// page (its contents hash is SHA-384 of 4 KiB of zeros); VMSAs are
	// measured at LAUNCH_FINISH, in vCPU order, at VMSAGPA, after KVM has set
	// CR4 to 0x40 (MCE) and RFLAGS to 0x2.
	QEMU Loader = iota
	// Direct is one SNP_LAUNCH_UPDATE per directive in file order, with a
	// page without file data launched as PAGE_TYPE_ZERO, and the VMSA bytes
	// measured as given (at VMSAGPA, after every page, in vCPU order). This
	// is how QEMU without IGVM, EC2 and GCE launch OVMF, the model of
	// virtee/sev-snp-measure.
	Direct
)

func (l Loader) String() string {
	switch l {
	case QEMU:
		return "qemu"
	case Direct:
		return "direct"
	}
	return fmt.Sprintf("loader(%d)", int(l))
}

// ParseLoader reads a Loader name ("qemu", "direct").
func ParseLoader(s string) (Loader, error) {
	switch s {
	case "qemu", "":
		return QEMU, nil
	case "direct":
		return Direct, nil
	}
	return 0, fmt.Errorf("igvm: unknown loader %q (want qemu or direct)", s)
}

// Digest is an SNP launch digest (the report's MEASUREMENT).
type Digest [48]byte

func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// Measurement is the result of SNPLaunchDigest.
type Measurement struct {
	Digest Digest
	Pages  int // PAGE_INFO updates before the VMSAs
	VMSAs  int
}

// Page is one SNP_LAUNCH_UPDATE page, in measurement order.
type Page struct {
	GPA      uint64
	Type     uint8
	Contents [48]byte // SHA-384 of the page for NORMAL and VMSA; zeros otherwise
}

// PageInfo extends digest cur by one page: SHA-384 of the 0x70-byte
// PAGE_INFO (digest, contents, length 0x70, page type, IMI 0, VMPL
// permissions 0, GPA).
func PageInfo(cur Digest, p Page) Digest {
	var b [0x70]byte
	copy(b[0x00:], cur[:])
	copy(b[0x30:], p.Contents[:])
	le.PutUint16(b[0x60:], 0x70)
	b[0x62] = p.Type
	le.PutUint64(b[0x68:], p.GPA)
	return sha512.Sum384(b[:])
}

var zeroPageHash = sha512.Sum384(make([]byte, PageSize))

// SNPPages lists the pages the loader measures, in order.
func (f *File) SNPPages(l Loader) ([]Page, int, error) {
	if l != QEMU && l != Direct {
		return nil, 0, fmt.Errorf("igvm: unknown loader %d", int(l))
	}
	plat, ok := f.SNPPlatform()
	if !ok {
		return nil, 0, ErrNoSNP
	}
	mask := plat.CompatibilityMask
	areas := map[uint32]uint64{}
	var (
		out     []Page
		pending []Page // the current run of page data (QEMU)
		lastDir = -2
		vmsas   []Header
	)
	flush := func() { out, pending = append(out, pending...), pending[:0] }
	for i, h := range f.Directives {
		if h.Type == TypeParameterArea {
			areas[h.AreaIndex] = h.AreaBytes
			continue
		}
		if h.CompatibilityMask&mask == 0 {
			continue
		}
		switch h.Type {
		case TypePageData:
			if h.Flags&Flag2MB != 0 {
				return nil, 0, fmt.Errorf("%w: page data at %#x: 2 MiB pages are not supported", ErrFormat, h.GPA)
			}
			p := classify(h, l)
			if l == Direct {
				out = append(out, p)
				continue
			}
			// QEMU measures a run of consecutive page directives when the
			// next page directive arrives after a gap (or at the end); the
			// grouping inside a run does not change the order.
			if i != lastDir+1 {
				flush()
			}
			pending = append(pending, p)
			lastDir = i
		case TypeParameterInsert:
			n, ok := areas[h.AreaIndex]
			if !ok {
				return nil, 0, fmt.Errorf("%w: parameter insert of undeclared area %d", ErrFormat, h.AreaIndex)
			}
			for off := uint64(0); off < n; off += PageSize {
				out = append(out, Page{GPA: h.GPA + off, Type: PageUnmeasured})
			}
		case TypeVPContext:
			if len(h.Data) != PageSize {
				return nil, 0, fmt.Errorf("%w: SNP VP context %d has %d bytes of VMSA", ErrFormat, h.VPIndex, len(h.Data))
			}
			vmsas = append(vmsas, h)
		}
	}
	flush()
	pages := len(out)
	// KVM measures the VMSAs at LAUNCH_FINISH, vCPU by vCPU.
	sort.SliceStable(vmsas, func(a, b int) bool { return vmsas[a].VPIndex < vmsas[b].VPIndex })
	for i, v := range vmsas {
		if i > 0 && vmsas[i-1].VPIndex == v.VPIndex {
			return nil, 0, fmt.Errorf("%w: two SNP VP contexts for vCPU %d", ErrFormat, v.VPIndex)
		}
		page := append([]byte(nil), v.Data...)
		if l == QEMU {
			kvmVMSA(page)
		}
		out = append(out, Page{GPA: VMSAGPA, Type: PageVMSA, Contents: sha512.Sum384(page)})
	}
	return out, pages, nil
}

// kvmVMSA applies what KVM's sev_es_sync_vmsa sets before measuring a VMSA
// built from QEMU's register state, as the peer does (the low byte of CR4 at
// offset 0x148 = 0x40, MCE; of RFLAGS at 0x170 = 0x2, the reserved bit).
func kvmVMSA(p []byte) {
	p[0x148] = 0x40
	p[0x170] = 0x02
}

func classify(h Header, l Loader) Page {
	p := Page{GPA: h.GPA}
	switch {
	case h.DataType == DataSecrets:
		p.Type = PageSecrets
	case h.DataType == DataCPUID || h.DataType == DataCPUIDXF:
		p.Type = PageCPUID
	case h.Flags&FlagUnmeasured != 0:
		p.Type = PageUnmeasured
	case h.Data == nil && l == Direct:
		p.Type = PageZero
	case h.Data == nil:
		p.Type, p.Contents = PageNormal, zeroPageHash
	default:
		p.Type, p.Contents = PageNormal, sha512.Sum384(h.Data)
	}
	return p
}

// SNPLaunchDigest computes the SEV-SNP launch digest of f as loader l
// launches it: the PAGE_INFO chain over SNPPages from a zero digest.
func (f *File) SNPLaunchDigest(l Loader) (Measurement, error) {
	pages, n, err := f.SNPPages(l)
	if err != nil {
		return Measurement{}, err
	}
	var d Digest
	for _, p := range pages {
		d = PageInfo(d, p)
	}
	return Measurement{Digest: d, Pages: n, VMSAs: len(pages) - n}, nil
}
