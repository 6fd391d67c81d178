package verity

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"testing"
)

// gptImage is a minimal 512-byte-sector GPT: header at LBA 1, entries at
// LBA 2, one partition per entry given.
func gptImage(sectors int, parts ...Partition) []byte {
	img := make([]byte, sectors*512)
	ents := img[1024 : 1024+128*4]
	for i, p := range parts {
		e := ents[i*128:]
		copy(e, p.Type[:])
		copy(e[16:], p.UUID[:])
		binary.LittleEndian.PutUint64(e[32:], p.FirstLBA)
		binary.LittleEndian.PutUint64(e[40:], p.LastLBA)
	}
	h := img[512:]
	copy(h, "EFI PART")
	binary.LittleEndian.PutUint32(h[8:], 0x10000)
	binary.LittleEndian.PutUint32(h[12:], 92)
	binary.LittleEndian.PutUint64(h[72:], 2)
	binary.LittleEndian.PutUint32(h[80:], 4)
	binary.LittleEndian.PutUint32(h[84:], 128)
	binary.LittleEndian.PutUint32(h[88:], crc32.ChecksumIEEE(ents))
	binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:92]))
	return img
}

func TestGPTRules(t *testing.T) {
	vp := Partition{Type: TypeRootVerity, FirstLBA: 10, LastLBA: 20}
	tests := []struct {
		name string
		img  []byte
		want string
	}{
		{"beyond the image", gptImage(64, Partition{Type: TypeRootVerity, FirstLBA: 10, LastLBA: 1 << 40}), "spans LBA"},
		{"end before start", gptImage(64, Partition{Type: TypeRootVerity, FirstLBA: 20, LastLBA: 10}), "spans LBA"},
		{"two verity partitions", gptImage(64, vp, vp), "all have type"},
		{"no verity partition", gptImage(64, Partition{Type: TypeRoot, FirstLBA: 10, LastLBA: 20}), "no partition of type"},
		{"header CRC", func() []byte { b := gptImage(64, vp); b[512+60] ^= 1; return b }(), "header CRC"},
		{"entries CRC", func() []byte { b := gptImage(64, vp); b[1024+40] ^= 1; return b }(), "entry array CRC"},
		{"no header", make([]byte, 4096), "no GPT header"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, err := ReadGPT(bytes.NewReader(tc.img), int64(len(tc.img)))
			if err == nil {
				_, err = g.Find(TypeRootVerity)
			}
			if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// superblock returns a valid sha256 superblock.
func superblock() []byte {
	b := make([]byte, SuperblockSize)
	copy(b, "verity\x00\x00")
	binary.LittleEndian.PutUint32(b[8:], 1)
	binary.LittleEndian.PutUint32(b[12:], 1)
	copy(b[32:], "sha256")
	binary.LittleEndian.PutUint32(b[64:], 4096)
	binary.LittleEndian.PutUint32(b[68:], 4096)
	binary.LittleEndian.PutUint64(b[72:], 1024)
	binary.LittleEndian.PutUint16(b[80:], 32)
	return b
}

func TestGeometry(t *testing.T) {
	for _, tc := range []struct {
		alg            string
		blocks         uint64
		per, slot, lvl int
	}{
		{"sha256", 2, 128, 32, 1}, {"sha256", 128, 128, 32, 1}, {"sha256", 129, 128, 32, 2},
		{"sha256", 1024, 128, 32, 2}, {"sha512", 1024, 64, 64, 2}, {"sha512", 64 * 64 * 64, 64, 64, 3},
	} {
		b := superblock()
		copy(b[32:64], make([]byte, 32))
		copy(b[32:], tc.alg)
		binary.LittleEndian.PutUint64(b[72:], tc.blocks)
		sb, err := ParseSuperblock(b)
		if err != nil {
			t.Fatal(err)
		}
		per, slot, lvl := sb.geometry()
		if int(per) != tc.per || slot != tc.slot || lvl != tc.lvl {
			t.Errorf("%s/%d: %d %d %d", tc.alg, tc.blocks, per, slot, lvl)
		}
	}
}

func TestSuperblockRules(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(b []byte)
	}{
		{"magic", func(b []byte) { b[0] = 'V' }},
		{"version", func(b []byte) { b[8] = 2 }},
		{"hash type", func(b []byte) { b[12] = 2 }},
		{"algorithm", func(b []byte) { copy(b[32:], "md5\x00\x00\x00") }},
		{"block size", func(b []byte) { binary.LittleEndian.PutUint32(b[68:], 4095) }},
		{"salt", func(b []byte) { binary.LittleEndian.PutUint16(b[80:], 257) }},
		{"one block", func(b []byte) { binary.LittleEndian.PutUint64(b[72:], 1) }},
	} {
		b := superblock()
		tc.edit(b)
		if _, err := ParseSuperblock(b); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

func FuzzReadGPT(f *testing.F) {
	f.Add(gptImage(64, Partition{Type: TypeRootVerity, FirstLBA: 10, LastLBA: 20}))
	f.Add(gptImage(64, Partition{Type: TypeRoot, FirstLBA: 10, LastLBA: 20}, Partition{Type: TypeRootVerity, FirstLBA: 21, LastLBA: 30}))
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := ReadGPT(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		for _, p := range g.Partitions {
			if g.Offset(p) < 0 || g.Offset(p)+g.Size(p) > int64(len(b)) {
				t.Fatalf("partition %+v outside %d bytes", p, len(b))
			}
		}
		g.Find(TypeRootVerity)
	})
}

func FuzzParseSuperblock(f *testing.F) {
	f.Add(superblock())
	f.Fuzz(func(t *testing.T, b []byte) {
		sb, err := ParseSuperblock(b)
		if err != nil {
			return
		}
		per, slot, lvl := sb.geometry()
		if per < 1 || slot*int(per) != int(sb.HashBlockSize) || lvl < 1 {
			t.Fatalf("geometry %d %d %d for %+v", per, slot, lvl, sb)
		}
		sb.RootHash(make([]byte, sb.HashBlockSize))
	})
}
