// Package igvm reads Independent Guest Virtual Machine files (the
// microsoft/igvm format, revisions 1 and 2, x64) and computes the AMD SEV-SNP
// launch digest a VMM loading them produces.
//
// Parse is written for untrusted input: every offset and length is checked
// against the file, unknown headers are refused rather than skipped (an
// unknown directive could change guest memory), and sizes that drive work
// (parameter areas) are capped.
package igvm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// PageSize is the only page size this package supports (4 KiB).
const PageSize = 4096

// ErrFormat is wrapped by every error Parse returns for a malformed file.
var ErrFormat = errors.New("igvm: malformed file")

// Magic is "IGVM" read as a little-endian uint32.
const Magic = 0x4D564749

// Fixed header sizes of revisions 1 and 2.
const (
	fixedV1Size = 24
	fixedV2Size = 32
)

// maxParameterArea caps a parameter area's declared size: the digest
// measures one page per 4 KiB of it, and real areas are a few pages.
const maxParameterArea = 64 << 20

// HeaderType is a variable header type (IGVM_VHT_*).
type HeaderType uint32

// Variable header types.
const (
	TypeSupportedPlatform   HeaderType = 0x1
	TypeGuestPolicy         HeaderType = 0x101
	TypeRelocatableRegion   HeaderType = 0x102
	TypePageTableRelocation HeaderType = 0x103
	TypeCorimDocument       HeaderType = 0x104
	TypeCorimSignature      HeaderType = 0x105
	TypeCCAPolicy           HeaderType = 0x106
	TypeParameterArea       HeaderType = 0x301
	TypePageData            HeaderType = 0x302
	TypeParameterInsert     HeaderType = 0x303
	TypeVPContext           HeaderType = 0x304
	TypeRequiredMemory      HeaderType = 0x305
	TypeVPCount             HeaderType = 0x307
	TypeSRAT                HeaderType = 0x308
	TypeMADT                HeaderType = 0x309
	TypeMMIORanges          HeaderType = 0x30A
	TypeSNPIDBlock          HeaderType = 0x30B
	TypeMemoryMap           HeaderType = 0x30C
	TypeErrorRange          HeaderType = 0x30D
	TypeCommandLine         HeaderType = 0x30E
	TypeSLIT                HeaderType = 0x30F
	TypePPTT                HeaderType = 0x310
	TypeVBSMeasurement      HeaderType = 0x311
	TypeDeviceTree          HeaderType = 0x312
	TypeEnvironmentInfo     HeaderType = 0x313
)

// bodySize is the exact header body length of each known type (the
// reference implementation rejects any other length).
var bodySize = map[HeaderType]int{
	TypeSupportedPlatform:   16,
	TypeGuestPolicy:         16,
	TypeRelocatableRegion:   48,
	TypePageTableRelocation: 40,
	TypeCorimDocument:       16,
	TypeCorimSignature:      16,
	TypeCCAPolicy:           32,
	TypeParameterArea:       16,
	TypePageData:            24,
	TypeParameterInsert:     16,
	TypeVPContext:           20,
	TypeRequiredMemory:      24,
	TypeVPCount:             8,
	TypeSRAT:                8,
	TypeMADT:                8,
	TypeMMIORanges:          32,
	TypeSNPIDBlock:          696,
	TypeMemoryMap:           8,
	TypeErrorRange:          16,
	TypeCommandLine:         8,
	TypeSLIT:                8,
	TypePPTT:                8,
	TypeVBSMeasurement:      864,
	TypeDeviceTree:          8,
	TypeEnvironmentInfo:     8,
}

// isParameter: the header is an IGVM_VHS_PARAMETER (area index + offset).
func (t HeaderType) isParameter() bool {
	switch t {
	case TypeVPCount, TypeSRAT, TypeMADT, TypeMemoryMap, TypeCommandLine, TypeSLIT, TypePPTT,
		TypeDeviceTree, TypeEnvironmentInfo:
		return true
	}
	return false
}

// PlatformType is IGVM_PLATFORM_TYPE.
type PlatformType uint8

// Platform types.
const (
	PlatformNative       PlatformType = 0
	PlatformVSMIsolation PlatformType = 1
	PlatformSEVSNP       PlatformType = 2
	PlatformTDX          PlatformType = 3
	PlatformSEV          PlatformType = 4
	PlatformSEVES        PlatformType = 5
	PlatformCCA          PlatformType = 6
)

// Platform is a supported-platform header.
type Platform struct {
	CompatibilityMask uint32
	HighestVTL        uint8
	Type              PlatformType
	Version           uint16
	SharedGPABoundary uint64
}

// PageDataType is IGVM_PAGE_DATA_TYPE.
type PageDataType uint16

// Page data types.
const (
	DataNormal    PageDataType = 0
	DataSecrets   PageDataType = 1
	DataCPUID     PageDataType = 2
	DataCPUIDXF   PageDataType = 3
	maxPageDataTy              = DataCPUIDXF
)

// Page data flags.
const (
	Flag2MB        uint32 = 1 << 0
	FlagUnmeasured uint32 = 1 << 1
	FlagShared     uint32 = 1 << 2
)

// Header is one initialization or directive header. Fields not used by its
// Type are zero; Body keeps the raw header body of every type (for the types
// this package only passes through).
type Header struct {
	Type              HeaderType
	CompatibilityMask uint32 // 0 for headers that have none (parameter area, parameters)
	GPA               uint64
	// Page data: Flags, DataType, Data (nil: no file data, a zero page;
	// otherwise exactly PageSize bytes).
	Flags    uint32
	DataType PageDataType
	// Data: page data, the VP context (an SNP VMSA page), or a parameter
	// area's initial data.
	Data []byte
	// Parameter areas and everything that refers to one.
	AreaIndex  uint32
	AreaBytes  uint64 // parameter area size; required memory size
	ByteOffset uint32 // parameter headers
	VPIndex    uint16
	Policy     uint64 // guest policy
	Body       []byte
}

// File is a parsed IGVM file.
type File struct {
	Revision       uint32 // 1 or 2
	Platforms      []Platform
	Initialization []Header
	Directives     []Header
}

// SNPPlatform returns the SEV-SNP platform header, if the file has one.
func (f *File) SNPPlatform() (Platform, bool) {
	for _, p := range f.Platforms {
		if p.Type == PlatformSEVSNP {
			return p, true
		}
	}
	return Platform{}, false
}

func ferr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrFormat, fmt.Sprintf(format, a...))
}

func align8(n uint64) uint64 { return (n + 7) &^ 7 }

var le = binary.LittleEndian

// Parse parses an IGVM file. The whole file is in b; returned slices alias
// it.
func Parse(b []byte) (*File, error) {
	if len(b) < fixedV1Size {
		return nil, ferr("%d bytes is shorter than the fixed header", len(b))
	}
	if le.Uint32(b) != Magic {
		return nil, ferr("bad magic %#x", le.Uint32(b))
	}
	f := &File{Revision: le.Uint32(b[4:])}
	fixed := fixedV1Size
	switch f.Revision {
	case 1:
	case 2:
		if len(b) < fixedV2Size {
			return nil, ferr("revision 2 fixed header truncated")
		}
		fixed = fixedV2Size
		if arch := le.Uint32(b[24:]); arch != 0 {
			return nil, ferr("architecture %d is not x64", arch)
		}
		if ps := le.Uint32(b[28:]); ps != PageSize {
			return nil, ferr("page size %d is not 4096", ps)
		}
	default:
		return nil, ferr("format version %d (want 1 or 2)", f.Revision)
	}
	vhOff, vhSize := uint64(le.Uint32(b[8:])), uint64(le.Uint32(b[12:]))
	total, sum := uint64(le.Uint32(b[16:])), le.Uint32(b[20:])
	if total != uint64(len(b)) {
		return nil, ferr("total_file_size %d but the file is %d bytes", total, len(b))
	}
	if vhOff < uint64(fixed) || vhOff+vhSize > total {
		return nil, ferr("variable headers [%d, +%d) outside the file", vhOff, vhSize)
	}
	// CRC32 of the fixed header (checksum zeroed) and the variable headers.
	h := crc32.NewIEEE()
	hdr := append([]byte(nil), b[:fixed]...)
	le.PutUint32(hdr[20:], 0)
	h.Write(hdr)
	vh := b[vhOff : vhOff+vhSize]
	h.Write(vh)
	if got := h.Sum32(); got != sum {
		return nil, ferr("checksum %#08x, computed %#08x", sum, got)
	}
	dataStart := vhOff + vhSize
	fileData := func(off uint32, n uint64) ([]byte, error) {
		if off == 0 {
			return nil, nil
		}
		if uint64(off) < dataStart || uint64(off) > total || n > total-uint64(off) {
			return nil, ferr("file data [%d, +%d) outside the data section", off, n)
		}
		return b[off : uint64(off)+n : uint64(off)+n], nil
	}

	const (
		stPlatform = iota
		stInit
		stDirective
	)
	stage := stPlatform
	masks := map[uint32]PlatformType{}
	var allMasks uint32
	areas := map[uint32]uint64{}
	inserted := map[uint32]bool{}
	for off := uint64(0); off < vhSize; {
		if vhSize-off < 8 {
			return nil, ferr("variable header at %d truncated", off)
		}
		typ, n := HeaderType(le.Uint32(vh[off:])), uint64(le.Uint32(vh[off+4:]))
		want, known := bodySize[typ]
		if !known {
			return nil, ferr("unknown variable header type %#x at %d", uint32(typ), off)
		}
		if n != uint64(want) {
			return nil, ferr("header %#x at %d: length %d, want %d", uint32(typ), off, n, want)
		}
		if adv := align8(8 + n); adv > vhSize-off {
			return nil, ferr("header %#x at %d overruns the variable headers", uint32(typ), off)
		}
		body := vh[off+8 : off+8+n : off+8+n]
		off += align8(8 + n)

		switch {
		case typ == TypeSupportedPlatform:
			if stage != stPlatform {
				return nil, ferr("platform header after initialization or directive headers")
			}
			p := Platform{
				CompatibilityMask: le.Uint32(body), HighestVTL: body[4], Type: PlatformType(body[5]),
				Version: le.Uint16(body[6:]), SharedGPABoundary: le.Uint64(body[8:]),
			}
			m := p.CompatibilityMask
			if m == 0 || m&(m-1) != 0 || allMasks&m != 0 {
				return nil, ferr("platform compatibility mask %#x is not a single unused bit", m)
			}
			if p.Type > PlatformCCA {
				return nil, ferr("unknown platform type %d", p.Type)
			}
			for _, q := range f.Platforms {
				if q.Type == p.Type {
					return nil, ferr("platform type %d declared twice", p.Type)
				}
			}
			masks[m] = p.Type
			allMasks |= m
			f.Platforms = append(f.Platforms, p)
		case typ < 0x301:
			if stage == stDirective {
				return nil, ferr("initialization header %#x after directives", uint32(typ))
			}
			stage = stInit
			hd, err := parseInit(typ, body, fileData)
			if err != nil {
				return nil, err
			}
			if err := checkMask(hd, allMasks); err != nil {
				return nil, err
			}
			f.Initialization = append(f.Initialization, hd)
		default:
			stage = stDirective
			hd, err := parseDirective(typ, body, fileData, masks)
			if err != nil {
				return nil, err
			}
			if err := checkMask(hd, allMasks); err != nil {
				return nil, err
			}
			if err := checkDirective(hd, areas, inserted); err != nil {
				return nil, err
			}
			f.Directives = append(f.Directives, hd)
		}
	}
	if len(f.Platforms) == 0 {
		return nil, ferr("no supported-platform header")
	}
	return f, nil
}

// hasMask: the header type carries a compatibility mask.
func hasMask(t HeaderType) bool {
	return !(t == TypeParameterArea || t == TypeMMIORanges || t.isParameter())
}

func checkMask(h Header, all uint32) error {
	if !hasMask(h.Type) {
		return nil
	}
	if h.CompatibilityMask == 0 || h.CompatibilityMask&^all != 0 {
		return ferr("header %#x: compatibility mask %#x names no declared platform (declared %#x)",
			uint32(h.Type), h.CompatibilityMask, all)
	}
	return nil
}

func parseInit(typ HeaderType, body []byte, fileData func(uint32, uint64) ([]byte, error)) (Header, error) {
	h := Header{Type: typ, Body: body, CompatibilityMask: le.Uint32(body)}
	switch typ {
	case TypeGuestPolicy:
		h.Policy, h.CompatibilityMask = le.Uint64(body), le.Uint32(body[8:])
		if le.Uint32(body[12:]) != 0 {
			return h, ferr("guest policy reserved field not zero")
		}
	case TypeCorimDocument, TypeCorimSignature:
		d, err := fileData(le.Uint32(body[4:]), uint64(le.Uint32(body[8:])))
		if err != nil {
			return h, err
		}
		h.Data = d
	case TypeRelocatableRegion, TypePageTableRelocation, TypeCCAPolicy:
	default:
		return h, ferr("header %#x is not an initialization header", uint32(typ))
	}
	return h, nil
}

func parseDirective(typ HeaderType, body []byte, fileData func(uint32, uint64) ([]byte, error), masks map[uint32]PlatformType) (Header, error) {
	h := Header{Type: typ, Body: body}
	var err error
	switch {
	case typ == TypeParameterArea:
		h.AreaBytes, h.AreaIndex = le.Uint64(body), le.Uint32(body[8:])
		if h.AreaBytes == 0 || h.AreaBytes > maxParameterArea {
			return h, ferr("parameter area %d: %d bytes (want 1-%d)", h.AreaIndex, h.AreaBytes, maxParameterArea)
		}
		h.Data, err = fileData(le.Uint32(body[12:]), h.AreaBytes)
	case typ == TypePageData:
		h.GPA, h.CompatibilityMask = le.Uint64(body), le.Uint32(body[8:])
		h.Flags, h.DataType = le.Uint32(body[16:]), PageDataType(le.Uint16(body[20:]))
		if le.Uint16(body[22:]) != 0 {
			return h, ferr("page data at %#x: reserved field not zero", h.GPA)
		}
		if h.Flags&^(Flag2MB|FlagUnmeasured|FlagShared) != 0 {
			return h, ferr("page data at %#x: reserved flags %#x", h.GPA, h.Flags)
		}
		if h.DataType > maxPageDataTy {
			return h, ferr("page data at %#x: unknown data type %d", h.GPA, h.DataType)
		}
		h.Data, err = fileData(le.Uint32(body[12:]), PageSize)
	case typ == TypeParameterInsert:
		h.GPA, h.CompatibilityMask, h.AreaIndex = le.Uint64(body), le.Uint32(body[8:]), le.Uint32(body[12:])
	case typ == TypeVPContext:
		h.GPA, h.CompatibilityMask, h.VPIndex = le.Uint64(body), le.Uint32(body[8:]), le.Uint16(body[16:])
		if le.Uint16(body[18:]) != 0 {
			return h, ferr("VP context %d: reserved field not zero", h.VPIndex)
		}
		fo := le.Uint32(body[12:])
		switch masks[h.CompatibilityMask] {
		case PlatformVSMIsolation:
			// A register list whose length is in the data; not interpreted here.
		default:
			if fo == 0 {
				return h, ferr("VP context %d has no data", h.VPIndex)
			}
			h.Data, err = fileData(fo, PageSize)
		}
	case typ == TypeRequiredMemory:
		h.GPA, h.CompatibilityMask = le.Uint64(body), le.Uint32(body[8:])
		h.AreaBytes = uint64(le.Uint32(body[12:]))
		if le.Uint32(body[20:]) != 0 {
			return h, ferr("required memory at %#x: reserved field not zero", h.GPA)
		}
	case typ.isParameter():
		h.AreaIndex, h.ByteOffset = le.Uint32(body), le.Uint32(body[4:])
	case typ == TypeMMIORanges:
		// No compatibility mask in the structure; treated as applying to all.
		h.CompatibilityMask = 0
	case typ == TypeSNPIDBlock, typ == TypeErrorRange, typ == TypeVBSMeasurement:
		if typ == TypeErrorRange {
			h.GPA, h.CompatibilityMask = le.Uint64(body), le.Uint32(body[8:])
		} else {
			h.CompatibilityMask = le.Uint32(body)
		}
	default:
		return h, ferr("header %#x is not a directive", uint32(typ))
	}
	return h, err
}

// checkDirective applies the cross-header rules: page-aligned addresses,
// parameter areas declared once before use, inserted at most once.
func checkDirective(h Header, areas map[uint32]uint64, inserted map[uint32]bool) error {
	switch {
	case h.Type == TypePageData || h.Type == TypeParameterInsert || h.Type == TypeVPContext:
		if h.GPA%PageSize != 0 {
			return ferr("header %#x: gpa %#x is not page aligned", uint32(h.Type), h.GPA)
		}
		if h.GPA > 1<<52 {
			return ferr("header %#x: gpa %#x beyond 52 bits", uint32(h.Type), h.GPA)
		}
	}
	switch {
	case h.Type == TypeParameterArea:
		if _, dup := areas[h.AreaIndex]; dup {
			return ferr("parameter area %d declared twice", h.AreaIndex)
		}
		areas[h.AreaIndex] = h.AreaBytes
	case h.Type == TypeParameterInsert:
		if _, ok := areas[h.AreaIndex]; !ok {
			return ferr("parameter insert of undeclared area %d", h.AreaIndex)
		}
		if inserted[h.AreaIndex] {
			return ferr("parameter area %d inserted twice", h.AreaIndex)
		}
		inserted[h.AreaIndex] = true
	case h.Type.isParameter():
		n, ok := areas[h.AreaIndex]
		if !ok {
			return ferr("header %#x uses undeclared parameter area %d", uint32(h.Type), h.AreaIndex)
		}
		if inserted[h.AreaIndex] {
			return ferr("header %#x uses parameter area %d after its insert", uint32(h.Type), h.AreaIndex)
		}
		if uint64(h.ByteOffset) >= n {
			return ferr("header %#x: offset %d outside parameter area %d", uint32(h.Type), h.ByteOffset, h.AreaIndex)
		}
	}
	return nil
}
