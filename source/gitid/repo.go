package gitid

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
)

// Reasons a .git yields no commit. Their texts are safe to show a client:
// they name neither server paths nor anything read from the repository.
var (
	ErrNoHead       = errors.New("HEAD does not name a commit that exists in .git")
	ErrBadRef       = errors.New("HEAD or a ref it names is malformed")
	ErrRefLoop      = errors.New("symbolic refs loop or nest too deeply")
	ErrNoObject     = errors.New("the HEAD commit is not stored in .git (alternates, partial clones and other repositories are not followed)")
	ErrCorrupt      = errors.New("a git object or pack in .git is corrupt")
	ErrTooLarge     = errors.New("a git object or file in .git is too large")
	ErrDeltaDepth   = errors.New("a pack delta chain is too deep or too costly")
	ErrLink         = errors.New(".git holds a symbolic link or a non-regular file where git data is expected")
	ErrNotCommit    = errors.New("HEAD does not name a commit")
	ErrUnsupported  = errors.New("unsupported git repository format")
	errObjNotInPack = errors.New("not in pack")
)

// Limits of reading a hostile .git.
const (
	maxRefFile      = 4 << 10   // HEAD, a loose ref
	maxPackedRefs   = 64 << 20  // packed-refs
	maxObject       = 16 << 20  // any object inflated, delta bases included
	maxInflateTotal = 256 << 20 // all inflation of one lookup (delta chains)
	maxDeltaDepth   = 4096      // git's own pack.depth maximum
	maxSymrefDepth  = 5         // git's SYMREF_MAXDEPTH
	maxPeel         = 16        // tag objects peeled on the way to a commit
	maxPacks        = 4096
)

// Head is the commit HEAD names and that commit's tree.
type Head struct {
	Commit string
	Tree   string
	Format Format
}

// ReadHead resolves HEAD of the repository directory gitDir (a .git
// directory) with Go code only: HEAD, loose refs and packed-refs, loose
// objects and packfiles (OFS/REF deltas), every file opened without
// following a symlink, every size bounded. The object found is hashed and
// must equal its id; annotated tags are peeled. Alternates, commondir,
// gitdir files, grafts and replace refs are never read: kettle records what
// this directory itself proves.
func ReadHead(gitDir string) (*Head, error) {
	r, err := Open(gitDir)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if b, err := r.r.d.readFile("HEAD", maxRefFile); err == nil && strings.TrimSpace(string(b)) == "ref: refs/heads/.invalid" {
		// git ≥ 2.45 reftable storage keeps refs in a binary format.
		return nil, fmt.Errorf("%w: reftable ref storage", ErrUnsupported)
	}
	id, err := r.Resolve("HEAD")
	if err != nil {
		return nil, err
	}
	return r.Peel(id)
}

// headerID reads the id of the first header line of an object, which
// must start with key ("tree " of a commit, "object " of a tag).
func headerID(data []byte, key string, f Format) (string, bool) {
	n := len(key) + 2*f.size()
	if len(data) < n+1 || string(data[:len(key)]) != key || data[n] != '\n' {
		return "", false
	}
	id := string(data[len(key):n])
	return id, isHex(id)
}

type repo struct {
	d      *dir
	f      Format
	budget int64
	packs  []*pack
	listed bool
}

func (r *repo) close() {
	for _, p := range r.packs {
		p.close()
	}
}

// classifyFS maps file-system errors of reading .git to the client-safe
// reasons.
func classifyFS(err error) error {
	switch {
	case errors.Is(err, errLink), errors.Is(err, errNotRegular):
		return fmt.Errorf("%w: %w", ErrLink, err)
	case errors.Is(err, ErrTooLarge):
		return err
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w: %w", ErrNoHead, err)
	}
	return err
}

// validRefName applies git's check-ref-format rules to a ref HEAD points
// to (it must live under refs/).
func validRefName(s string) bool {
	if !strings.HasPrefix(s, "refs/") || len(s) > 1024 || strings.HasSuffix(s, "/") || strings.HasSuffix(s, ".") ||
		strings.Contains(s, "..") || strings.Contains(s, "@{") || strings.Contains(s, "//") {
		return false
	}
	for _, c := range strings.Split(s, "/") {
		if c == "" || c[0] == '.' || strings.HasSuffix(c, ".lock") {
			return false
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c == 0x7f || strings.IndexByte("~^:?*[\\", c) >= 0 {
			return false
		}
	}
	return true
}

// resolveRef follows name (HEAD or refs/…) to an object id.
func (r *repo) resolveRef(name string, depth int) (string, error) {
	if depth > maxSymrefDepth {
		return "", ErrRefLoop
	}
	data, err := r.d.readFile(name, maxRefFile)
	if errors.Is(err, os.ErrNotExist) && name != "HEAD" {
		return r.packedRef(name)
	}
	if err != nil {
		return "", classifyFS(err)
	}
	return parseRef(data, func(target string) (string, error) { return r.resolveRef(target, depth+1) })
}

// parseRef reads the content of HEAD or a loose ref: "ref: <name>" (a
// symbolic ref, followed through next) or a hex object id.
func parseRef(data []byte, next func(string) (string, error)) (string, error) {
	s := strings.TrimRight(string(data), "\n")
	if strings.ContainsAny(s, "\n\r\x00") {
		return "", ErrBadRef
	}
	if t, ok := strings.CutPrefix(s, "ref:"); ok {
		t = strings.TrimLeft(t, " \t")
		if !validRefName(t) {
			return "", ErrBadRef
		}
		return next(t)
	}
	if _, ok := formatOf(s); !ok {
		return "", ErrBadRef
	}
	return s, nil
}

func (r *repo) packedRef(name string) (string, error) {
	data, err := r.d.readFile("packed-refs", maxPackedRefs)
	if errors.Is(err, os.ErrNotExist) {
		return "", ErrNoHead
	}
	if err != nil {
		return "", classifyFS(err)
	}
	return lookupPackedRef(data, name)
}

// lookupPackedRef finds name in a packed-refs file: "<hex> <name>" lines,
// "#" header and "^<hex>" peeled lines skipped. A malformed line is an
// error, as in git.
func lookupPackedRef(data []byte, name string) (string, error) {
	for len(data) > 0 {
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, nil
		}
		if len(line) == 0 || line[0] == '#' || line[0] == '^' {
			continue
		}
		id, ref, ok := bytes.Cut(line, []byte(" "))
		if _, hexOK := formatOf(string(id)); !ok || !hexOK {
			return "", ErrBadRef
		}
		if string(ref) == name {
			return string(id), nil
		}
	}
	return "", ErrNoHead
}

// Object types, as numbered in packfiles.
const (
	objCommit   = 1
	objTree     = 2
	objBlob     = 3
	objTag      = 4
	objOfsDelta = 6
	objRefDelta = 7
)

var typeNames = map[string]int{"commit": objCommit, "tree": objTree, "blob": objBlob, "tag": objTag}

func typeName(t int) string {
	for n, v := range typeNames {
		if v == t {
			return n
		}
	}
	return ""
}

// object returns the object id (raw bytes) from a loose file or a pack,
// verified: its hash must equal id.
func (r *repo) object(id []byte, depth int) (int, []byte, error) {
	if depth > maxDeltaDepth {
		return 0, nil, ErrDeltaDepth
	}
	typ, data, err := r.loose(id)
	if errors.Is(err, os.ErrNotExist) {
		typ, data, err = r.packed(id, depth)
	}
	if err != nil {
		return 0, nil, err
	}
	got, err := objectID(r.f, typeName(typ), data)
	if err != nil {
		return 0, nil, err
	}
	if !bytes.Equal(got, id) {
		return 0, nil, fmt.Errorf("%w: object content does not hash to its id", ErrCorrupt)
	}
	return typ, data, nil
}

func (r *repo) spend(n int64) error {
	r.budget -= n
	if r.budget < 0 {
		return ErrDeltaDepth
	}
	return nil
}

func (r *repo) loose(id []byte) (int, []byte, error) {
	h := hex.EncodeToString(id)
	f, _, err := r.d.openRegular("objects/" + h[:2] + "/" + h[2:])
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, nil, err
		}
		return 0, nil, classifyFS(err)
	}
	defer f.Close()
	return parseLoose(f, r.spend)
}

// parseLoose inflates a loose object: zlib of "<type> <size>\0<content>".
func parseLoose(rd io.Reader, spend func(int64) error) (int, []byte, error) {
	// Deflate may spend input without output (empty blocks): bound the
	// compressed bytes too.
	zr, err := zlib.NewReader(bufio.NewReader(io.LimitReader(rd, maxCompressed(maxObject))))
	if err != nil {
		return 0, nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	defer zr.Close()
	br := bufio.NewReader(io.LimitReader(zr, maxObject+64))
	hdr, err := br.ReadString(0)
	if err != nil || len(hdr) > 32 {
		return 0, nil, fmt.Errorf("%w: loose object header", ErrCorrupt)
	}
	kind, sizeStr, ok := strings.Cut(hdr[:len(hdr)-1], " ")
	typ := typeNames[kind]
	size, perr := strconv.ParseInt(sizeStr, 10, 64)
	if !ok || typ == 0 || perr != nil || size < 0 || (len(sizeStr) > 1 && sizeStr[0] == '0') {
		return 0, nil, fmt.Errorf("%w: loose object header", ErrCorrupt)
	}
	if size > maxObject {
		return 0, nil, ErrTooLarge
	}
	if err := spend(size); err != nil {
		return 0, nil, err
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(br, data); err != nil {
		return 0, nil, fmt.Errorf("%w: loose object shorter than its header says", ErrCorrupt)
	}
	if n, _ := br.Read(make([]byte, 1)); n != 0 {
		return 0, nil, fmt.Errorf("%w: loose object longer than its header says", ErrCorrupt)
	}
	return typ, data, nil
}

// packed looks id up in every pack of objects/pack.
func (r *repo) packed(id []byte, depth int) (int, []byte, error) {
	if err := r.listPacks(); err != nil {
		return 0, nil, err
	}
	for _, p := range r.packs {
		off, err := p.find(id)
		if errors.Is(err, errObjNotInPack) {
			continue
		}
		if err != nil {
			return 0, nil, err
		}
		return p.entry(r, off, depth)
	}
	return 0, nil, ErrNoObject
}

func (r *repo) listPacks() error {
	if r.listed {
		return nil
	}
	r.listed = true
	pd, err := r.d.sub("objects/pack")
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return classifyFS(err)
	}
	defer pd.Close()
	names, err := pd.f.Readdirnames(-1)
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, n := range names {
		base, ok := strings.CutSuffix(n, ".idx")
		if !ok || !strings.HasPrefix(base, "pack-") {
			continue
		}
		if len(r.packs) >= maxPacks {
			return fmt.Errorf("%w: more than %d packs", ErrTooLarge, maxPacks)
		}
		p, err := openPack(pd, base, r.f)
		if err != nil {
			return err
		}
		r.packs = append(r.packs, p)
	}
	return nil
}

// A pack is an index (v2) and its packfile, read with ReadAt.
type pack struct {
	idx, data          *os.File
	idxSize, dataSize  int64
	n                  uint32
	hashLen            int
	fanout             [256]uint32
	namesAt, offsAt    int64
	largeAt, largeSize int64
}

func (p *pack) close() {
	p.idx.Close()
	p.data.Close()
}

func openPack(pd *dir, base string, f Format) (*pack, error) {
	idx, idxSize, err := pd.openRegular(base + ".idx")
	if err != nil {
		return nil, classifyFS(err)
	}
	data, dataSize, err := pd.openRegular(base + ".pack")
	if err != nil {
		idx.Close()
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: an index without its pack", ErrCorrupt)
		}
		return nil, classifyFS(err)
	}
	p := &pack{idx: idx, data: data, idxSize: idxSize, dataSize: dataSize, hashLen: f.size()}
	if err := p.readIndexHeader(); err != nil {
		p.close()
		return nil, err
	}
	var ph [12]byte
	if _, err := data.ReadAt(ph[:], 0); err != nil || string(ph[:4]) != "PACK" ||
		(binary.BigEndian.Uint32(ph[4:]) != 2 && binary.BigEndian.Uint32(ph[4:]) != 3) {
		p.close()
		return nil, fmt.Errorf("%w: pack header", ErrCorrupt)
	}
	return p, nil
}

// readIndexHeader checks a v2 index's layout against its size: magic,
// version, a monotonic fanout, and room for exactly n names, CRCs and
// offsets (plus large offsets) and the two trailing checksums.
func (p *pack) readIndexHeader() error {
	hdr := make([]byte, 8+256*4)
	if _, err := p.idx.ReadAt(hdr, 0); err != nil {
		return fmt.Errorf("%w: pack index too short", ErrCorrupt)
	}
	if string(hdr[:4]) != "\xfftOc" {
		return fmt.Errorf("%w: pack index version 1", ErrUnsupported)
	}
	if binary.BigEndian.Uint32(hdr[4:]) != 2 {
		return fmt.Errorf("%w: pack index version", ErrUnsupported)
	}
	var prev uint32
	for i := range p.fanout {
		v := binary.BigEndian.Uint32(hdr[8+4*i:])
		if v < prev {
			return fmt.Errorf("%w: pack index fanout", ErrCorrupt)
		}
		p.fanout[i], prev = v, v
	}
	p.n = p.fanout[255]
	n, hl := int64(p.n), int64(p.hashLen)
	p.namesAt = 8 + 256*4
	p.offsAt = p.namesAt + n*hl + n*4
	p.largeAt = p.offsAt + n*4
	p.largeSize = p.idxSize - p.largeAt - 2*hl
	if p.largeSize < 0 || p.largeSize%8 != 0 || p.largeSize > n*8 {
		return fmt.Errorf("%w: pack index size", ErrCorrupt)
	}
	return nil
}

// find returns the pack offset of id (binary search within its fanout
// bucket, reading names with ReadAt).
func (p *pack) find(id []byte) (int64, error) {
	lo := uint32(0)
	if id[0] > 0 {
		lo = p.fanout[id[0]-1]
	}
	hi := p.fanout[id[0]]
	name := make([]byte, p.hashLen)
	for lo < hi {
		mid := lo + (hi-lo)/2
		if _, err := p.idx.ReadAt(name, p.namesAt+int64(mid)*int64(p.hashLen)); err != nil {
			return 0, fmt.Errorf("%w: pack index read", ErrCorrupt)
		}
		switch c := bytes.Compare(name, id); {
		case c == 0:
			return p.offset(mid)
		case c < 0:
			lo = mid + 1
		default:
			hi = mid
		}
	}
	return 0, errObjNotInPack
}

func (p *pack) offset(i uint32) (int64, error) {
	var b [8]byte
	if _, err := p.idx.ReadAt(b[:4], p.offsAt+int64(i)*4); err != nil {
		return 0, fmt.Errorf("%w: pack index read", ErrCorrupt)
	}
	off := int64(binary.BigEndian.Uint32(b[:4]))
	if off&0x80000000 != 0 {
		j := (off & 0x7fffffff) * 8
		if j+8 > p.largeSize {
			return 0, fmt.Errorf("%w: pack index large offset", ErrCorrupt)
		}
		if _, err := p.idx.ReadAt(b[:], p.largeAt+j); err != nil {
			return 0, fmt.Errorf("%w: pack index read", ErrCorrupt)
		}
		u := binary.BigEndian.Uint64(b[:])
		if u > 1<<62 {
			return 0, fmt.Errorf("%w: pack index large offset", ErrCorrupt)
		}
		off = int64(u)
	}
	if off < 12 || off >= p.dataSize-int64(p.hashLen) {
		return 0, fmt.Errorf("%w: pack offset out of range", ErrCorrupt)
	}
	return off, nil
}

// entry reads the object at off, resolving deltas: an OFS_DELTA base must
// lie before its delta (no cycles through offsets); REF_DELTA bases are
// looked up by id like any object. Depth and the total inflated bytes are
// bounded.
func (p *pack) entry(r *repo, off int64, depth int) (int, []byte, error) {
	if depth > maxDeltaDepth {
		return 0, nil, ErrDeltaDepth
	}
	if off < 12 || off >= p.dataSize {
		return 0, nil, fmt.Errorf("%w: pack offset out of range", ErrCorrupt)
	}
	br := bufio.NewReaderSize(io.NewSectionReader(p.data, off, p.dataSize-off), 4096)
	typ, size, hdrLen, err := readEntryHeader(br)
	if err != nil {
		return 0, nil, err
	}
	if size > maxObject {
		return 0, nil, ErrTooLarge
	}
	switch typ {
	case objCommit, objTree, objBlob, objTag:
		data, err := inflate(br, size, r.spend)
		return typ, data, err
	case objOfsDelta:
		rel, err := readOfs(br)
		if err != nil {
			return 0, nil, err
		}
		if rel <= 0 || rel > off-12 {
			return 0, nil, fmt.Errorf("%w: delta base offset out of range", ErrCorrupt)
		}
		delta, err := inflate(br, size, r.spend)
		if err != nil {
			return 0, nil, err
		}
		btyp, base, err := p.entry(r, off-rel, depth+1)
		if err != nil {
			return 0, nil, err
		}
		out, err := applyDelta(base, delta)
		if err == nil {
			err = r.spend(int64(len(out)))
		}
		return btyp, out, err
	case objRefDelta:
		baseID := make([]byte, p.hashLen)
		if _, err := io.ReadFull(br, baseID); err != nil {
			return 0, nil, fmt.Errorf("%w: truncated delta", ErrCorrupt)
		}
		delta, err := inflate(br, size, r.spend)
		if err != nil {
			return 0, nil, err
		}
		btyp, base, err := r.object(baseID, depth+1)
		if errors.Is(err, ErrNoObject) {
			err = fmt.Errorf("%w: a delta base is missing", ErrCorrupt)
		}
		if err != nil {
			return 0, nil, err
		}
		out, err := applyDelta(base, delta)
		if err == nil {
			err = r.spend(int64(len(out)))
		}
		return btyp, out, err
	}
	_ = hdrLen
	return 0, nil, fmt.Errorf("%w: pack entry type %d", ErrCorrupt, typ)
}

// readEntryHeader reads a pack entry's type and size varint.
func readEntryHeader(br io.ByteReader) (typ int, size int64, n int, err error) {
	b, err := br.ReadByte()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("%w: truncated pack entry", ErrCorrupt)
	}
	n = 1
	typ = int(b>>4) & 7
	size = int64(b & 15)
	shift := uint(4)
	for b&0x80 != 0 {
		if b, err = br.ReadByte(); err != nil {
			return 0, 0, 0, fmt.Errorf("%w: truncated pack entry", ErrCorrupt)
		}
		n++
		if shift > 56 {
			return 0, 0, 0, fmt.Errorf("%w: pack entry size", ErrCorrupt)
		}
		size |= int64(b&0x7f) << shift
		shift += 7
	}
	return typ, size, n, nil
}

// readOfs reads an OFS_DELTA's negative base offset.
func readOfs(br io.ByteReader) (int64, error) {
	b, err := br.ReadByte()
	if err != nil {
		return 0, fmt.Errorf("%w: truncated delta", ErrCorrupt)
	}
	v := int64(b & 0x7f)
	for i := 0; b&0x80 != 0; i++ {
		if i > 8 {
			return 0, fmt.Errorf("%w: delta offset", ErrCorrupt)
		}
		if b, err = br.ReadByte(); err != nil {
			return 0, fmt.Errorf("%w: truncated delta", ErrCorrupt)
		}
		v = (v+1)<<7 | int64(b&0x7f)
	}
	return v, nil
}

// inflate reads exactly size bytes of zlib data.
func inflate(r io.Reader, size int64, spend func(int64) error) ([]byte, error) {
	if err := spend(size); err != nil {
		return nil, err
	}
	zr, err := zlib.NewReader(io.LimitReader(r, maxCompressed(size)))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	defer zr.Close()
	data := make([]byte, size)
	if _, err := io.ReadFull(zr, data); err != nil {
		return nil, fmt.Errorf("%w: pack data shorter than its header says", ErrCorrupt)
	}
	if n, _ := zr.Read(make([]byte, 1)); n != 0 {
		return nil, fmt.Errorf("%w: pack data longer than its header says", ErrCorrupt)
	}
	return data, nil
}

// applyDelta applies a git delta (source size, target size, then copy and
// insert instructions) to base, checking every bound.
func applyDelta(base, delta []byte) ([]byte, error) {
	bad := func(what string) error { return fmt.Errorf("%w: delta %s", ErrCorrupt, what) }
	src, n := deltaVarint(delta)
	if n == 0 || src != uint64(len(base)) {
		return nil, bad("source size")
	}
	delta = delta[n:]
	dst, n := deltaVarint(delta)
	if n == 0 || dst > maxObject {
		return nil, bad("target size")
	}
	delta = delta[n:]
	out := make([]byte, 0, dst)
	for len(delta) > 0 {
		op := delta[0]
		delta = delta[1:]
		switch {
		case op&0x80 != 0:
			var off, sz uint64
			for i := uint(0); i < 4; i++ {
				if op&(1<<i) != 0 {
					if len(delta) == 0 {
						return nil, bad("copy")
					}
					off |= uint64(delta[0]) << (8 * i)
					delta = delta[1:]
				}
			}
			for i := uint(0); i < 3; i++ {
				if op&(0x10<<i) != 0 {
					if len(delta) == 0 {
						return nil, bad("copy")
					}
					sz |= uint64(delta[0]) << (8 * i)
					delta = delta[1:]
				}
			}
			if sz == 0 {
				sz = 0x10000
			}
			if off+sz > uint64(len(base)) || uint64(len(out))+sz > dst {
				return nil, bad("copy out of range")
			}
			out = append(out, base[off:off+sz]...)
		case op != 0:
			if int(op) > len(delta) || uint64(len(out))+uint64(op) > dst {
				return nil, bad("insert out of range")
			}
			out = append(out, delta[:op]...)
			delta = delta[op:]
		default:
			return nil, bad("opcode 0")
		}
	}
	if uint64(len(out)) != dst {
		return nil, bad("target size mismatch")
	}
	return out, nil
}

// maxCompressed bounds the deflate input of size inflated bytes (deflate
// grows incompressible data by well under 1/8).
func maxCompressed(size int64) int64 { return size + size/8 + 64<<10 }

func deltaVarint(b []byte) (uint64, int) {
	var v uint64
	for i := 0; i < len(b) && i < 10; i++ {
		v |= uint64(b[i]&0x7f) << (7 * uint(i))
		if b[i]&0x80 == 0 {
			return v, i + 1
		}
	}
	return 0, 0
}
