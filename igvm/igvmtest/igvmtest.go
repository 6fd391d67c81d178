// Package igvmtest builds small IGVM files for tests: an SNP guest whose
// measured memory holds a kernel HOB list and a UKI with a .cmdline section,
// laid out the way the peer's IGVM builder lays them out.
package igvmtest

import (
	"encoding/binary"

	"github.com/kettle-build/kettle/igvm"
)

var le = binary.LittleEndian

// Guest addresses of the test layout.
const (
	HOBGPA    = 0x1000
	KernelGPA = 0x100000
	ParamGPA  = 0x4000
)

// UKI returns a minimal PE32+ image whose only section is .cmdline holding
// cmdline (NUL-terminated), padded to whole pages.
func UKI(cmdline string) []byte {
	body := append([]byte(cmdline), 0)
	n := (0x400 + len(body) + igvm.PageSize - 1) / igvm.PageSize * igvm.PageSize
	b := make([]byte, n)
	b[0], b[1] = 'M', 'Z'
	const pe = 0x80
	le.PutUint32(b[0x3c:], pe)
	copy(b[pe:], "PE\x00\x00")
	coff := pe + 4
	le.PutUint16(b[coff+2:], 1)     // one section
	le.PutUint16(b[coff+16:], 0xf0) // optional header size
	sec := coff + 20 + 0xf0
	copy(b[sec:], ".cmdline")
	le.PutUint32(b[sec+16:], uint32(len(body))) // SizeOfRawData
	le.PutUint32(b[sec+20:], 0x400)             // PointerToRawData
	copy(b[0x400:], body)
	return b
}

// HOBEntry is one EfiIgvmDataHob: GUID extension header, HOB GUID, address,
// length, data type.
func HOBEntry(addr, length uint64, dataType uint32) []byte {
	e := make([]byte, 0x30)
	le.PutUint16(e, 0x0004)
	le.PutUint16(e[2:], 0x30)
	copy(e[8:], igvm.HOBGUID[:])
	le.PutUint64(e[0x18:], addr)
	le.PutUint64(e[0x20:], length)
	le.PutUint32(e[0x28:], dataType)
	return e
}

// Guest returns an SNP IGVM file (revision 2, mask 1) with a HOB page at
// HOBGPA naming a UKI with cmdline at KernelGPA, a zero page, a parameter
// area inserted at ParamGPA, and one BSP VMSA.
func Guest(cmdline string) *igvm.File {
	const mask = 1
	f := &igvm.File{
		Revision:       2,
		Platforms:      []igvm.Platform{{CompatibilityMask: mask, Type: igvm.PlatformSEVSNP, Version: 1}},
		Initialization: []igvm.Header{{Type: igvm.TypeGuestPolicy, Policy: 0x30000, CompatibilityMask: mask}},
	}
	page := func(gpa uint64, data []byte) {
		f.Directives = append(f.Directives, igvm.Header{Type: igvm.TypePageData, GPA: gpa, CompatibilityMask: mask, Data: data})
	}
	uki := UKI(cmdline)
	hob := make([]byte, igvm.PageSize)
	copy(hob, HOBEntry(0x200000, 10, 0x202)) // another blob first, as the peer writes them
	copy(hob[0x30:], HOBEntry(KernelGPA, uint64(len(uki)), igvm.HOBKernel))
	copy(hob[0x60:], []byte{0xff, 0xff, 0x08, 0x00}) // end of HOB list
	f.Directives = append(f.Directives, igvm.Header{Type: igvm.TypeParameterArea, AreaIndex: 0, AreaBytes: igvm.PageSize})
	page(HOBGPA, hob)
	page(HOBGPA+igvm.PageSize, nil)
	f.Directives = append(f.Directives,
		igvm.Header{Type: igvm.TypeVPCount, AreaIndex: 0},
		igvm.Header{Type: igvm.TypeParameterInsert, GPA: ParamGPA, CompatibilityMask: mask, AreaIndex: 0})
	for off := 0; off < len(uki); off += igvm.PageSize {
		page(KernelGPA+uint64(off), uki[off:off+igvm.PageSize])
	}
	vmsa := make([]byte, igvm.PageSize)
	le.PutUint64(vmsa[0x178:], 0xfff0) // rip
	le.PutUint64(vmsa[0x3b0:], 1)      // sev_features: SNP
	f.Directives = append(f.Directives, igvm.Header{Type: igvm.TypeVPContext, GPA: igvm.VMSAGPA, CompatibilityMask: mask, Data: vmsa})
	return f
}

// GuestBytes is Guest marshalled.
func GuestBytes(cmdline string) []byte {
	b, err := Guest(cmdline).Marshal()
	if err != nil {
		panic(err)
	}
	return b
}
