package igvm

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// ErrNoCmdline: the file carries no kernel command line this package can
// find (no kernel HOB, no UKI, no .cmdline section, no roothash=).
var ErrNoCmdline = errors.New("igvm: no kernel command line")

// HOBGUID is EFI_IGVM_DATA_HOB_GUID (3dd177ff-b632-4e25-bef3-065063d55fc4)
// in its on-disk byte order: the GUID of the HOB entries with which the
// peer's IGVM builder tells OVMF where it placed the kernel, initrd and
// other blobs.
var HOBGUID = [16]byte{0xff, 0x77, 0xd1, 0x3d, 0x32, 0xb6, 0x25, 0x4e, 0xbe, 0xf3, 0x06, 0x50, 0x63, 0xd5, 0x5f, 0xc4}

// HOBKernel is the data_type of the kernel (UKI) blob's HOB entry.
const HOBKernel = 0x201

const hobEntrySize = 0x30

// measuredMemory is the guest memory the launch digest binds: every page
// whose contents the digest covers (NORMAL pages, data-less ones as zeros),
// by GPA. Pages the digest covers only by address (unmeasured, secrets,
// CPUID, parameter areas the host fills) are not in it, and nothing read
// from the image may come from them.
func (f *File) measuredMemory() (map[uint64][]byte, error) {
	plat, ok := f.SNPPlatform()
	if !ok {
		return nil, ErrNoSNP
	}
	zero := make([]byte, PageSize)
	mem := map[uint64][]byte{}
	hostFilled := map[uint64]bool{}
	areas := map[uint32]uint64{}
	for _, h := range f.Directives {
		if h.Type == TypeParameterArea {
			areas[h.AreaIndex] = h.AreaBytes
		}
		if h.CompatibilityMask&plat.CompatibilityMask == 0 {
			continue
		}
		switch h.Type {
		case TypeParameterInsert:
			for off := uint64(0); off < areas[h.AreaIndex]; off += PageSize {
				hostFilled[h.GPA+off] = true
			}
		case TypePageData:
			if h.DataType != DataNormal || h.Flags&(FlagUnmeasured|Flag2MB) != 0 {
				hostFilled[h.GPA] = true
				continue
			}
			if _, dup := mem[h.GPA]; dup {
				return nil, fmt.Errorf("%w: two measured pages at gpa %#x", ErrFormat, h.GPA)
			}
			if h.Data == nil {
				mem[h.GPA] = zero
			} else {
				mem[h.GPA] = h.Data
			}
		}
	}
	// A page both loaded and overwritten by the host holds what the host
	// wrote: it is not measured content.
	for gpa := range hostFilled {
		delete(mem, gpa)
	}
	return mem, nil
}

type run struct {
	gpa  uint64
	data []byte
}

func runs(mem map[uint64][]byte) []run {
	gpas := make([]uint64, 0, len(mem))
	for g := range mem {
		gpas = append(gpas, g)
	}
	sort.Slice(gpas, func(a, b int) bool { return gpas[a] < gpas[b] })
	var out []run
	for _, g := range gpas {
		if n := len(out); n > 0 && out[n-1].gpa+uint64(len(out[n-1].data)) == g {
			out[n-1].data = append(out[n-1].data, mem[g]...)
			continue
		}
		out = append(out, run{gpa: g, data: append([]byte(nil), mem[g]...)})
	}
	return out
}

// kernelBlob finds the kernel HOB entry in measured memory: a GUID
// extension HOB (type 4, length >= 0x30) with HOBGUID at offset 8 and
// data_type HOBKernel; its address (0x18) and length (0x20). Two different
// kernel entries are ambiguous and refused.
func kernelBlob(rs []run) (addr, length uint64, err error) {
	found := false
	for _, r := range rs {
		for i := 0; ; {
			j := bytes.Index(r.data[i:], HOBGUID[:])
			if j < 0 {
				break
			}
			at := i + j
			i = at + 1
			base := at - 8
			if base < 0 || base+hobEntrySize > len(r.data) {
				continue
			}
			e := r.data[base : base+hobEntrySize]
			if le.Uint16(e) != 0x0004 || le.Uint16(e[2:]) < hobEntrySize || le.Uint32(e[0x28:]) != HOBKernel {
				continue
			}
			a, n := le.Uint64(e[0x18:]), le.Uint64(e[0x20:])
			if found && (a != addr || n != length) {
				return 0, 0, fmt.Errorf("%w: two kernel HOB entries (%#x+%d, %#x+%d)", ErrFormat, addr, length, a, n)
			}
			addr, length, found = a, n, true
		}
	}
	if !found {
		return 0, 0, fmt.Errorf("%w: no kernel HOB entry in measured memory", ErrNoCmdline)
	}
	return addr, length, nil
}

func reassemble(mem map[uint64][]byte, addr, length uint64) ([]byte, error) {
	if length == 0 || length > uint64(len(mem))*PageSize {
		return nil, fmt.Errorf("%w: kernel blob of %d bytes, more than the measured memory", ErrFormat, length)
	}
	if addr > 1<<52 {
		return nil, fmt.Errorf("%w: kernel blob at %#x beyond 52 bits", ErrFormat, addr)
	}
	start := addr &^ (PageSize - 1)
	skip := addr - start
	out := make([]byte, 0, skip+length+PageSize)
	for g := start; uint64(len(out)) < skip+length; g += PageSize {
		p, ok := mem[g]
		if !ok {
			return nil, fmt.Errorf("%w: kernel blob page %#x is not measured content", ErrFormat, g)
		}
		out = append(out, p...)
	}
	return out[skip : skip+length], nil
}

// PECmdline returns the .cmdline section of a PE/COFF image (a UKI),
// cut at the first NUL and trimmed.
func PECmdline(img []byte) (string, error) {
	if len(img) < 0x40 || img[0] != 'M' || img[1] != 'Z' {
		return "", fmt.Errorf("%w: kernel blob is not a PE image (no MZ)", ErrNoCmdline)
	}
	pe := uint64(le.Uint32(img[0x3c:]))
	if pe+24 > uint64(len(img)) || string(img[pe:pe+4]) != "PE\x00\x00" {
		return "", fmt.Errorf("%w: kernel blob is not a PE image (no PE signature)", ErrNoCmdline)
	}
	coff := pe + 4
	nsec := uint64(le.Uint16(img[coff+2:]))
	optSize := uint64(le.Uint16(img[coff+16:]))
	sec := coff + 20 + optSize
	var cmd []byte
	found := false
	for k := uint64(0); k < nsec; k++ {
		s := sec + 40*k
		if s+40 > uint64(len(img)) {
			return "", fmt.Errorf("%w: PE section table truncated", ErrFormat)
		}
		if string(img[s:s+8]) != ".cmdline" {
			continue
		}
		if found {
			return "", fmt.Errorf("%w: two .cmdline sections", ErrFormat)
		}
		size, ptr := uint64(le.Uint32(img[s+16:])), uint64(le.Uint32(img[s+20:]))
		if ptr+size > uint64(len(img)) {
			return "", fmt.Errorf("%w: .cmdline section outside the image", ErrFormat)
		}
		cmd, found = img[ptr:ptr+size], true
	}
	if !found {
		return "", fmt.Errorf("%w: the UKI has no .cmdline section", ErrNoCmdline)
	}
	if i := bytes.IndexByte(cmd, 0); i >= 0 {
		cmd = cmd[:i]
	}
	return strings.TrimSpace(string(cmd)), nil
}

// KernelCmdline recovers the kernel command line the way the peer does: the
// kernel HOB entry names the UKI's place in guest memory, the UKI is
// reassembled from the pages there and its .cmdline section read. Unlike the
// peer, only memory whose contents the SNP launch digest binds is used, so
// the command line is as attested as the digest.
func (f *File) KernelCmdline() (string, error) {
	mem, err := f.measuredMemory()
	if err != nil {
		return "", err
	}
	addr, n, err := kernelBlob(runs(mem))
	if err != nil {
		return "", err
	}
	uki, err := reassemble(mem, addr, n)
	if err != nil {
		return "", err
	}
	return PECmdline(uki)
}

// RootHash returns the roothash= value of cmdline (lower-case hex of 32 or
// 64 bytes). None, two, or one that is not such hex is an error.
func RootHash(cmdline string) (string, error) {
	var got []string
	for _, tok := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(tok, "roothash="); ok {
			got = append(got, v)
		}
	}
	switch len(got) {
	case 0:
		return "", fmt.Errorf("%w: no roothash= on the kernel command line", ErrNoCmdline)
	case 1:
	default:
		return "", fmt.Errorf("%w: %d roothash= on the kernel command line", ErrFormat, len(got))
	}
	v := strings.ToLower(got[0])
	if b, err := hex.DecodeString(v); err != nil || (len(b) != 32 && len(b) != 64) {
		return "", fmt.Errorf("%w: roothash=%q is not 64 or 128 hex digits", ErrFormat, got[0])
	}
	return v, nil
}
