package igvm

import (
	"fmt"
	"hash/crc32"
)

// Marshal writes f in the IGVM binary format (revision f.Revision; 0 means
// 2). Headers are written from their typed fields; Body is used only for the
// pass-through types. Parse(Marshal(f)) gives back f's headers. It exists for
// tests and tools that build images.
func (f *File) Marshal() ([]byte, error) {
	rev := f.Revision
	if rev == 0 {
		rev = 2
	}
	fixed := fixedV2Size
	switch rev {
	case 1:
		fixed = fixedV1Size
	case 2:
	default:
		return nil, fmt.Errorf("igvm: marshal: revision %d", rev)
	}
	var vh, data []byte
	// Offsets are absolute; they are rebased once the header size is known.
	type fixup struct{ at, dataOff int }
	var fix []fixup
	add := func(t HeaderType, body []byte) {
		var hd [8]byte
		le.PutUint32(hd[:], uint32(t))
		le.PutUint32(hd[4:], uint32(len(body)))
		vh = append(vh, hd[:]...)
		vh = append(vh, body...)
		for len(vh)%8 != 0 {
			vh = append(vh, 0)
		}
	}
	// withData appends d to the file data and records that the uint32 at
	// body offset at (in the header about to be added) must point at it.
	withData := func(at int, d []byte) {
		if d == nil {
			return
		}
		fix = append(fix, fixup{at: len(vh) + 8 + at, dataOff: len(data)})
		data = append(data, d...)
	}
	for _, p := range f.Platforms {
		b := make([]byte, 16)
		le.PutUint32(b, p.CompatibilityMask)
		b[4], b[5] = p.HighestVTL, byte(p.Type)
		le.PutUint16(b[6:], p.Version)
		le.PutUint64(b[8:], p.SharedGPABoundary)
		add(TypeSupportedPlatform, b)
	}
	for _, h := range f.Initialization {
		switch h.Type {
		case TypeGuestPolicy:
			b := make([]byte, 16)
			le.PutUint64(b, h.Policy)
			le.PutUint32(b[8:], h.CompatibilityMask)
			add(h.Type, b)
		default:
			if h.Data != nil || len(h.Body) != bodySize[h.Type] {
				return nil, fmt.Errorf("igvm: marshal: initialization header %#x not supported", uint32(h.Type))
			}
			add(h.Type, h.Body)
		}
	}
	for _, h := range f.Directives {
		var b []byte
		switch {
		case h.Type == TypePageData:
			if h.Data != nil && len(h.Data) != PageSize {
				return nil, fmt.Errorf("igvm: marshal: page data at %#x is %d bytes", h.GPA, len(h.Data))
			}
			b = make([]byte, 24)
			le.PutUint64(b, h.GPA)
			le.PutUint32(b[8:], h.CompatibilityMask)
			le.PutUint32(b[16:], h.Flags)
			le.PutUint16(b[20:], uint16(h.DataType))
			withData(12, h.Data)
		case h.Type == TypeParameterArea:
			b = make([]byte, 16)
			le.PutUint64(b, h.AreaBytes)
			le.PutUint32(b[8:], h.AreaIndex)
			withData(12, h.Data)
		case h.Type == TypeParameterInsert:
			b = make([]byte, 16)
			le.PutUint64(b, h.GPA)
			le.PutUint32(b[8:], h.CompatibilityMask)
			le.PutUint32(b[12:], h.AreaIndex)
		case h.Type == TypeVPContext:
			if len(h.Data) != PageSize {
				return nil, fmt.Errorf("igvm: marshal: VP context %d is %d bytes", h.VPIndex, len(h.Data))
			}
			b = make([]byte, 20)
			le.PutUint64(b, h.GPA)
			le.PutUint32(b[8:], h.CompatibilityMask)
			le.PutUint16(b[16:], h.VPIndex)
			withData(12, h.Data)
		case h.Type == TypeRequiredMemory:
			b = make([]byte, 24)
			le.PutUint64(b, h.GPA)
			le.PutUint32(b[8:], h.CompatibilityMask)
			le.PutUint32(b[12:], uint32(h.AreaBytes))
			le.PutUint32(b[16:], h.Flags)
		case h.Type.isParameter():
			b = make([]byte, 8)
			le.PutUint32(b, h.AreaIndex)
			le.PutUint32(b[4:], h.ByteOffset)
		default:
			if len(h.Body) != bodySize[h.Type] {
				return nil, fmt.Errorf("igvm: marshal: directive %#x not supported", uint32(h.Type))
			}
			b = h.Body
		}
		add(h.Type, b)
	}
	dataStart := fixed + len(vh)
	for _, x := range fix {
		le.PutUint32(vh[x.at:], uint32(dataStart+x.dataOff))
	}
	total := dataStart + len(data)
	if uint64(total) > 1<<32-1 {
		return nil, fmt.Errorf("igvm: marshal: %d bytes is too large", total)
	}
	out := make([]byte, fixed, total)
	le.PutUint32(out, Magic)
	le.PutUint32(out[4:], rev)
	le.PutUint32(out[8:], uint32(fixed))
	le.PutUint32(out[12:], uint32(len(vh)))
	le.PutUint32(out[16:], uint32(total))
	if rev == 2 {
		le.PutUint32(out[24:], 0) // x64
		le.PutUint32(out[28:], PageSize)
	}
	h := crc32.NewIEEE()
	h.Write(out)
	h.Write(vh)
	le.PutUint32(out[20:], h.Sum32())
	out = append(out, vh...)
	return append(out, data...), nil
}
