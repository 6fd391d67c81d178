package verity

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"math/bits"
	"os"
	"strings"
)

// SuperblockSize is the on-disk size of the dm-verity superblock.
const SuperblockSize = 512

// Superblock is cryptsetup's dm-verity superblock (format version 1).
type Superblock struct {
	HashType      uint32 // 1: hash(salt || block); 0 (Chrome OS): hash(block || salt)
	UUID          [16]byte
	Algorithm     string // sha256 or sha512
	DataBlockSize uint32
	HashBlockSize uint32
	DataBlocks    uint64
	Salt          []byte
}

// ParseSuperblock parses the first SuperblockSize bytes of a verity hash
// device.
func ParseSuperblock(b []byte) (*Superblock, error) {
	if len(b) < SuperblockSize || string(b[:8]) != "verity\x00\x00" {
		return nil, fmt.Errorf("%w: no dm-verity superblock (magic)", ErrFormat)
	}
	if v := le.Uint32(b[8:]); v != 1 {
		return nil, fmt.Errorf("%w: dm-verity superblock version %d", ErrFormat, v)
	}
	sb := &Superblock{HashType: le.Uint32(b[12:])}
	copy(sb.UUID[:], b[16:32])
	alg := b[32:64]
	if i := strings.IndexByte(string(alg), 0); i >= 0 {
		alg = alg[:i]
	}
	sb.Algorithm = string(alg)
	sb.DataBlockSize, sb.HashBlockSize = le.Uint32(b[64:]), le.Uint32(b[68:])
	sb.DataBlocks = le.Uint64(b[72:])
	salt := int(le.Uint16(b[80:]))
	if sb.HashType > 1 {
		return nil, fmt.Errorf("%w: dm-verity hash type %d", ErrFormat, sb.HashType)
	}
	if newHash(sb.Algorithm) == nil {
		return nil, fmt.Errorf("%w: dm-verity hash algorithm %q (want sha256 or sha512)", ErrFormat, sb.Algorithm)
	}
	for _, bs := range []uint32{sb.DataBlockSize, sb.HashBlockSize} {
		if bs < 512 || bs > 1<<20 || bs&(bs-1) != 0 {
			return nil, fmt.Errorf("%w: dm-verity block size %d", ErrFormat, bs)
		}
	}
	if salt > 256 {
		return nil, fmt.Errorf("%w: dm-verity salt of %d bytes", ErrFormat, salt)
	}
	// One data block has no hash tree (cryptsetup's root is then the data
	// block's own hash); no image is that small.
	if sb.DataBlocks < 2 || sb.DataBlocks > 1<<40 {
		return nil, fmt.Errorf("%w: dm-verity over %d data blocks", ErrFormat, sb.DataBlocks)
	}
	sb.Salt = append([]byte(nil), b[88:88+salt]...)
	return sb, nil
}

func newHash(alg string) func() hash.Hash {
	switch alg {
	case "sha256":
		return sha256.New
	case "sha512":
		return sha512.New
	}
	return nil
}

// hashBlock is the dm-verity digest of one block.
func (sb *Superblock) hashBlock(h hash.Hash, block []byte) []byte {
	h.Reset()
	if sb.HashType == 1 {
		h.Write(sb.Salt)
		h.Write(block)
	} else {
		h.Write(block)
		h.Write(sb.Salt)
	}
	return h.Sum(nil)
}

// geometry: digests per hash block (a power of two; version 1 gives each
// digest a slot of HashBlockSize/perBlock bytes) and the number of levels
// of the tree, cryptsetup's way.
func (sb *Superblock) geometry() (perBlock uint64, slot int, levels int) {
	ds := uint64(newHash(sb.Algorithm)().Size())
	perBits := bits.Len64(uint64(sb.HashBlockSize)/ds) - 1
	for levels = 0; perBits*levels < 64 && (sb.DataBlocks-1)>>(uint(perBits*levels)) != 0; levels++ {
	}
	return 1 << perBits, int(uint64(sb.HashBlockSize) >> perBits), levels
}

// RootHash is the root hash of a tree whose top level (one hash block,
// stored first, right after the superblock) is top.
func (sb *Superblock) RootHash(top []byte) []byte {
	return sb.hashBlock(newHash(sb.Algorithm)(), top)
}

// Image is a disk image's verity partition.
type Image struct {
	GPT        *GPT
	Verity     Partition
	Superblock *Superblock
	// RootHash is the stored root hash: the hash of the top hash block.
	RootHash string
	f        *os.File
	size     int64
}

// Open reads the GPT of the disk image at path, its only root-verity
// partition, the superblock and the root hash. Close it when done.
func Open(path string) (*Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	img, err := open(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return img, nil
}

func open(f *os.File) (*Image, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("verity: not a regular file")
	}
	img := &Image{f: f, size: st.Size()}
	if img.GPT, err = ReadGPT(f, img.size); err != nil {
		return nil, err
	}
	if img.Verity, err = img.GPT.Find(TypeRootVerity); err != nil {
		return nil, err
	}
	off, psize := img.GPT.Offset(img.Verity), img.GPT.Size(img.Verity)
	b := make([]byte, SuperblockSize)
	if psize < SuperblockSize {
		return nil, fmt.Errorf("%w: verity partition of %d bytes", ErrFormat, psize)
	}
	if _, err := f.ReadAt(b, off); err != nil {
		return nil, fmt.Errorf("verity: read superblock: %w", err)
	}
	if img.Superblock, err = ParseSuperblock(b); err != nil {
		return nil, err
	}
	hbs := int64(img.Superblock.HashBlockSize)
	// The hash area starts at the first hash block after the superblock.
	if 2*hbs > psize {
		return nil, fmt.Errorf("%w: verity partition of %d bytes holds no hash block", ErrFormat, psize)
	}
	top := make([]byte, hbs)
	if _, err := f.ReadAt(top, off+hbs); err != nil {
		return nil, fmt.Errorf("verity: read top hash block: %w", err)
	}
	img.RootHash = hex.EncodeToString(img.Superblock.RootHash(top))
	return img, nil
}

// Close closes the image file.
func (img *Image) Close() error { return img.f.Close() }

// VerifyData re-hashes the data partition p (normally the only partition
// of TypeRoot) into a full tree and compares its root with the stored root
// hash: it proves the data the image carries is what the root hash covers.
func (img *Image) VerifyData(ctx context.Context, p Partition) error {
	sb := img.Superblock
	dbs := int64(sb.DataBlockSize)
	if int64(sb.DataBlocks) > img.GPT.Size(p)/dbs {
		return fmt.Errorf("%w: %d data blocks of %d bytes do not fit partition %d (%d bytes)",
			ErrFormat, sb.DataBlocks, dbs, p.Index, img.GPT.Size(p))
	}
	perBlock, slot, levels := sb.geometry()
	h := newHash(sb.Algorithm)()
	hbs := int(sb.HashBlockSize)
	// Level 0 from the data, streamed; each level is ~1/perBlock of the one
	// below, so the levels above fit in memory.
	var level [][]byte
	cur := make([]byte, hbs)
	n := uint64(0)
	r := io.NewSectionReader(img.f, img.GPT.Offset(p), int64(sb.DataBlocks)*dbs)
	buf := make([]byte, dbs)
	for i := uint64(0); i < sb.DataBlocks; i++ {
		if i%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if _, err := io.ReadFull(r, buf); err != nil {
			return fmt.Errorf("verity: read data block %d: %w", i, err)
		}
		copy(cur[int(n)*slot:], sb.hashBlock(h, buf))
		if n++; n == perBlock {
			level, cur, n = append(level, cur), make([]byte, hbs), 0
		}
	}
	if n > 0 {
		level = append(level, cur)
	}
	for l := 1; l < levels; l++ {
		var up [][]byte
		cur, n = make([]byte, hbs), 0
		for _, blk := range level {
			copy(cur[int(n)*slot:], sb.hashBlock(h, blk))
			if n++; n == perBlock {
				up, cur, n = append(up, cur), make([]byte, hbs), 0
			}
		}
		if n > 0 {
			up = append(up, cur)
		}
		level = up
	}
	if len(level) != 1 {
		return fmt.Errorf("%w: hash tree top level has %d blocks", ErrFormat, len(level))
	}
	if got := hex.EncodeToString(sb.RootHash(level[0])); got != img.RootHash {
		return fmt.Errorf("%w: data partition %d hashes to root %s, the verity partition's root is %s",
			ErrFormat, p.Index, got, img.RootHash)
	}
	return nil
}
