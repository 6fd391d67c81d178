// Package verity reads a GPT disk image's dm-verity partitions: the GPT, the
// verity superblock, the root hash cryptsetup stores (the hash of the top
// level of the hash tree), and optionally re-hashes the data partition the
// tree covers. Everything read from the image is untrusted: offsets and sizes
// are checked against the file, and nothing is allocated by a size the image
// declares beyond small caps.
package verity

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"unicode/utf16"
)

// ErrFormat is wrapped by every error for a malformed image.
var ErrFormat = errors.New("verity: malformed image")

var le = binary.LittleEndian

// GUID is a GPT GUID in its on-disk (mixed-endian) byte order.
type GUID [16]byte

// ParseGUID reads the textual form (2c7357ed-ebd2-46d9-aec1-23d437ec2bf5).
func ParseGUID(s string) (GUID, error) {
	var g GUID
	h := strings.ReplaceAll(s, "-", "")
	if len(h) != 32 || len(s) != 36 {
		return g, fmt.Errorf("verity: bad GUID %q", s)
	}
	var raw [16]byte
	for i := range raw {
		if _, err := fmt.Sscanf(h[2*i:2*i+2], "%02x", &raw[i]); err != nil {
			return g, fmt.Errorf("verity: bad GUID %q", s)
		}
	}
	g[0], g[1], g[2], g[3] = raw[3], raw[2], raw[1], raw[0]
	g[4], g[5], g[6], g[7] = raw[5], raw[4], raw[7], raw[6]
	copy(g[8:], raw[8:])
	return g, nil
}

func mustGUID(s string) GUID {
	g, err := ParseGUID(s)
	if err != nil {
		panic(err)
	}
	return g
}

func (g GUID) String() string {
	return fmt.Sprintf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%x-%x",
		g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8:10], g[10:])
}

// Partition types (the Discoverable Partitions Specification, x86-64).
var (
	TypeRootVerity = mustGUID("2c7357ed-ebd2-46d9-aec1-23d437ec2bf5")
	TypeRoot       = mustGUID("4f68bce3-e8cd-4db1-96e7-fbcaf984b709")
)

// Partition is one used GPT entry.
type Partition struct {
	Index             int // 1-based, as sgdisk numbers them
	Type, UUID        GUID
	FirstLBA, LastLBA uint64
	Name              string
}

// GPT is a parsed partition table.
type GPT struct {
	SectorSize int64
	Partitions []Partition
}

// Offset and Size of a partition in bytes.
func (g *GPT) Offset(p Partition) int64 { return int64(p.FirstLBA) * g.SectorSize }

// Size of a partition in bytes.
func (g *GPT) Size(p Partition) int64 { return int64(p.LastLBA-p.FirstLBA+1) * g.SectorSize }

const (
	maxEntries   = 1024
	maxEntrySize = 4096
)

// ReadGPT reads the primary GPT of an image of size bytes (512- or
// 4096-byte sectors): the header CRC, the entry array CRC, and that every
// partition lies inside the image.
func ReadGPT(r io.ReaderAt, size int64) (*GPT, error) {
	var lastErr error
	for _, ss := range []int64{512, 4096} {
		g, err := readGPT(r, size, ss)
		if err == nil {
			return g, nil
		}
		if lastErr == nil || !errors.Is(err, errNoHeader) {
			lastErr = err
		}
	}
	return nil, lastErr
}

var errNoHeader = fmt.Errorf("%w: no GPT header (\"EFI PART\" at LBA 1)", ErrFormat)

func readGPT(r io.ReaderAt, size, ss int64) (*GPT, error) {
	if size < 2*ss {
		return nil, errNoHeader
	}
	hdr := make([]byte, ss)
	if _, err := r.ReadAt(hdr, ss); err != nil {
		return nil, fmt.Errorf("verity: read GPT header: %w", err)
	}
	return parseGPT(hdr, func(off, n int64) ([]byte, error) {
		if off < 0 || n < 0 || off > size || n > size-off {
			return nil, fmt.Errorf("%w: GPT entries [%d, +%d) outside the %d-byte image", ErrFormat, off, n, size)
		}
		b := make([]byte, n)
		if _, err := r.ReadAt(b, off); err != nil {
			return nil, fmt.Errorf("verity: read GPT entries: %w", err)
		}
		return b, nil
	}, size, ss)
}

// parseGPT parses the header sector hdr; read fetches the entry array.
func parseGPT(hdr []byte, read func(off, n int64) ([]byte, error), size, ss int64) (*GPT, error) {
	if string(hdr[:8]) != "EFI PART" {
		return nil, errNoHeader
	}
	hsize := le.Uint32(hdr[12:])
	if hsize < 92 || int64(hsize) > ss {
		return nil, fmt.Errorf("%w: GPT header size %d", ErrFormat, hsize)
	}
	h := append([]byte(nil), hdr[:hsize]...)
	want := le.Uint32(h[16:])
	le.PutUint32(h[16:], 0)
	if got := crc32.ChecksumIEEE(h); got != want {
		return nil, fmt.Errorf("%w: GPT header CRC %#08x, computed %#08x", ErrFormat, want, got)
	}
	entLBA, n, esz := le.Uint64(hdr[72:]), le.Uint32(hdr[80:]), le.Uint32(hdr[84:])
	if n > maxEntries || esz < 128 || esz > maxEntrySize || esz%8 != 0 {
		return nil, fmt.Errorf("%w: GPT with %d entries of %d bytes", ErrFormat, n, esz)
	}
	if entLBA < 2 || entLBA > uint64(size/ss) {
		return nil, fmt.Errorf("%w: GPT entries at LBA %d", ErrFormat, entLBA)
	}
	ents, err := read(int64(entLBA)*ss, int64(n)*int64(esz))
	if err != nil {
		return nil, err
	}
	if got, want := crc32.ChecksumIEEE(ents), le.Uint32(hdr[88:]); got != want {
		return nil, fmt.Errorf("%w: GPT entry array CRC %#08x, computed %#08x", ErrFormat, want, got)
	}
	g := &GPT{SectorSize: ss}
	sectors := uint64(size / ss)
	for i := uint32(0); i < n; i++ {
		e := ents[i*esz : (i+1)*esz]
		var p Partition
		copy(p.Type[:], e[0:16])
		if p.Type == (GUID{}) {
			continue
		}
		copy(p.UUID[:], e[16:32])
		p.Index, p.FirstLBA, p.LastLBA = int(i)+1, le.Uint64(e[32:]), le.Uint64(e[40:])
		if p.LastLBA < p.FirstLBA || p.LastLBA >= sectors {
			return nil, fmt.Errorf("%w: partition %d spans LBA %d-%d of a %d-sector image", ErrFormat, p.Index, p.FirstLBA, p.LastLBA, sectors)
		}
		p.Name = utf16Name(e[56:128])
		g.Partitions = append(g.Partitions, p)
	}
	return g, nil
}

func utf16Name(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := le.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

// Find returns the only partition of type t; none or several is an error.
func (g *GPT) Find(t GUID) (Partition, error) {
	var found []Partition
	for _, p := range g.Partitions {
		if p.Type == t {
			found = append(found, p)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return Partition{}, fmt.Errorf("%w: no partition of type %s", ErrFormat, t)
	}
	var idx []string
	for _, p := range found {
		idx = append(idx, fmt.Sprint(p.Index))
	}
	return Partition{}, fmt.Errorf("%w: partitions %s all have type %s", ErrFormat, strings.Join(idx, ", "), t)
}
