package source

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/source/gitid"
)

// Limits bound an archive's extraction; zero fields take the defaults.
type Limits struct {
	MaxBytes   int64   // total bytes of all files written
	MaxEntries int     // entries in the archive
	MaxRatio   float64 // uncompressed/compressed size, checked above ratioFloor
}

// Defaults of Limits.
const (
	DefaultMaxBytes   = 2 << 30
	DefaultMaxEntries = 200_000
	DefaultMaxRatio   = 200
	// ratioFloor: below this many uncompressed bytes the ratio is not
	// checked, so small, highly compressible files (padding, zeros) pass.
	ratioFloor = 1 << 20
)

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultMaxEntries
	}
	if l.MaxRatio <= 0 {
		l.MaxRatio = DefaultMaxRatio
	}
	return l
}

const (
	maxNameLen    = 4096
	maxCompLen    = 255
	maxLinkTarget = 4096
)

// Extract unpacks a ZIP or a gzip tarball (detected by its magic bytes) into
// a new directory under workDir. Absolute paths, "..", links leaving the
// tree, writes through links, hard links, devices, FIFOs, duplicate paths,
// bombs and corrupt data are refused; regular files keep their exec bit
// (0755, else 0644). A .git holds only directories and regular files (any
// link in or as .git is refused); its hooks, alternates and redirects are
// dropped and its config files sanitised (see gitmeta.go), for git that
// tools may run inside the sandbox. Tree.Identity is computed from the
// result by gitid (Go code; no git runs on the host). On error nothing is
// left behind.
func Extract(ctx context.Context, archivePath, workDir string, lim Limits) (*Tree, error) {
	f, err := os.Open(archivePath)
	if err != nil {
		return nil, fmt.Errorf("open archive: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat archive: %w", err)
	}
	var magic [4]byte
	n, _ := io.ReadFull(f, magic[:])
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("seek archive: %w", err)
	}
	kind := ""
	switch {
	case n >= 4 && bytes.Equal(magic[:4], []byte("PK\x03\x04")):
		kind = "zip"
	case n >= 4 && bytes.Equal(magic[:4], []byte("PK\x05\x06")):
		return nil, refuse(ErrNotArchive, nil, "the ZIP archive is empty")
	case n >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		kind = "tgz"
	default:
		return nil, refuse(ErrNotArchive, nil, "source_data is neither a ZIP archive (PK) nor a gzip tarball (1f8b)")
	}

	rootDir, err := os.MkdirTemp(workDir, "src-")
	if err != nil {
		return nil, fmt.Errorf("create extraction directory: %w", err)
	}
	root, err := os.OpenRoot(rootDir)
	if err != nil {
		os.RemoveAll(rootDir)
		return nil, fmt.Errorf("open extraction directory: %w", err)
	}
	e := &extractor{ctx: ctx, root: root, lim: lim.withDefaults(), seen: map[string]entryKind{}, buf: make([]byte, 256<<10)}
	if kind == "zip" {
		err = e.zip(f, st.Size())
	} else {
		err = e.tarGz(f, st.Size())
	}
	if err == nil {
		err = e.checkLinks()
	}
	root.Close()
	if err != nil {
		os.RemoveAll(rootDir)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("extract archive: %w", ctx.Err())
		}
		var fe *failure.Error
		if !errors.As(err, &fe) {
			// An I/O failure on our side (disk full, …), not the client's fault.
			return nil, failure.Wrap(failure.InternalError, err, "could not extract the archive")
		}
		return nil, err
	}
	t := &Tree{Dir: rootDir, Files: e.files}
	if top, ok := singleTopDir(rootDir); ok {
		t.Dir, t.Top = filepath.Join(rootDir, top), top
	}
	if t.Identity, err = identify(ctx, t.Dir); err != nil {
		os.RemoveAll(rootDir)
		return nil, err
	}
	return t, nil
}

// identify computes an extracted tree's identity with gitid (Go code over
// the tree; git never runs on it). A .git without a verifiable HEAD commit
// is refused with the reason.
func identify(ctx context.Context, dir string) (*gitid.Identity, error) {
	id, err := gitid.Identify(ctx, dir, gitid.Options{})
	if err == nil {
		return id, nil
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("identify source: %w", ctx.Err())
	}
	if r := gitid.Reason(err); r != "" {
		return nil, refuse(ErrIdentity, err, "cannot compute the source's git identity: %s", r)
	}
	return nil, failure.Wrap(failure.InternalError, err, "could not hash the extracted source")
}

// singleTopDir reports the name of dir's only entry when it is a directory.
func singleTopDir(dir string) (string, bool) {
	ents, err := os.ReadDir(dir)
	// A lone .git is repository metadata, not a project directory.
	if err != nil || len(ents) != 1 || !ents[0].IsDir() || strings.EqualFold(ents[0].Name(), ".git") {
		return "", false
	}
	return ents[0].Name(), true
}

type entryKind uint8

const (
	kImplicitDir entryKind = iota + 1 // created as a parent of an entry
	kDir
	kFile
	kSymlink
	kSkipped // dropped .git metadata
)

type extractor struct {
	ctx     context.Context
	root    *os.Root
	lim     Limits
	entries int
	written int64
	files   int
	seen    map[string]entryKind
	links   []string
	buf     []byte
}

func (e *extractor) countEntry() error {
	e.entries++
	if e.entries > e.lim.MaxEntries {
		return refuse(ErrTooManyEntries, nil, "archive has more than %d entries", e.lim.MaxEntries)
	}
	return e.ctx.Err()
}

// cleanName validates an entry name and returns its slash-separated
// relative form ("" for the root itself).
func cleanName(name string) (string, error) {
	switch {
	case name == "":
		return "", refuse(ErrUnsafePath, nil, "archive entry with an empty name")
	case len(name) > maxNameLen:
		return "", refuse(ErrUnsafePath, nil, "archive entry name longer than %d bytes", maxNameLen)
	case !utf8.ValidString(name):
		return "", refuse(ErrUnsafePath, nil, "archive entry %s: name is not valid UTF-8", quote(name))
	case strings.HasPrefix(name, "/"):
		return "", refuse(ErrUnsafePath, nil, "archive entry %s: absolute paths are not allowed", quote(name))
	case strings.Contains(name, "\\"):
		return "", refuse(ErrUnsafePath, nil, "archive entry %s: backslashes are not allowed in names", quote(name))
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return "", refuse(ErrUnsafePath, nil, "archive entry %s: control characters are not allowed in names", quote(name))
		}
	}
	parts := strings.Split(name, "/")
	out := parts[:0]
	for _, p := range parts {
		switch {
		case p == "" || p == ".":
			continue
		case p == "..":
			return "", refuse(ErrUnsafePath, nil, "archive entry %s: '..' is not allowed in paths", quote(name))
		case len(p) > maxCompLen:
			return "", refuse(ErrUnsafePath, nil, "archive entry %s: a path component is longer than %d bytes", quote(name), maxCompLen)
		}
		out = append(out, p)
	}
	return strings.Join(out, "/"), nil
}

// parents makes sure every parent directory of p exists, refusing paths
// that pass through a symlink or a file.
func (e *extractor) parents(p, name string) error {
	for i := 0; i < len(p); i++ {
		if p[i] != '/' {
			continue
		}
		dir := p[:i]
		switch e.seen[dir] {
		case kDir, kImplicitDir:
			continue
		case kSymlink:
			return refuse(ErrUnsafeLink, nil, "archive entry %s is written through the symlink %s", quote(name), quote(dir))
		case kFile:
			return refuse(ErrDuplicate, nil, "archive entry %s: parent %s is a file", quote(name), quote(dir))
		case kSkipped:
			return errSkip
		}
		if err := e.root.Mkdir(dir, 0o755); err != nil {
			return fmt.Errorf("mkdir: %w", err)
		}
		e.seen[dir] = kImplicitDir
	}
	return nil
}

// errSkip marks an entry under dropped .git metadata.
var errSkip = errors.New("skipped")

// claim registers p as a new entry of kind k.
func (e *extractor) claim(p, name string, k entryKind) error {
	if old, ok := e.seen[p]; ok {
		if old == kSkipped {
			return errSkip
		}
		if !(old == kImplicitDir && k == kDir) {
			return refuse(ErrDuplicate, nil, "archive entry %s: duplicate path", quote(name))
		}
	}
	if err := e.parents(p, name); err != nil {
		return err
	}
	e.seen[p] = k
	return nil
}

func (e *extractor) dir(name string) error {
	p, err := cleanName(name)
	if err != nil || p == "" {
		return err
	}
	if skip, err := gitEntry(p, name, true); err != nil || skip {
		if skip {
			e.seen[p] = kSkipped
		}
		return err
	}
	existed := e.seen[p] == kImplicitDir
	if err := e.claim(p, name, kDir); err != nil {
		return ignoreSkip(err)
	}
	if existed {
		return nil
	}
	if err := e.root.Mkdir(p, 0o755); err != nil {
		return fmt.Errorf("mkdir: %w", err)
	}
	return nil
}

func ignoreSkip(err error) error {
	if err == errSkip {
		return nil
	}
	return err
}

// file writes a regular file from r, which must yield exactly size bytes
// when size >= 0.
func (e *extractor) file(name string, exec bool, r io.Reader, size int64) error {
	p, err := cleanName(name)
	if err != nil {
		return err
	}
	if p == "" {
		return refuse(ErrUnsafePath, nil, "archive entry %s: a file cannot replace the root directory", quote(name))
	}
	skip, err := gitEntry(p, name, false)
	if err != nil {
		return err
	}
	if skip {
		e.seen[p] = kSkipped
		return nil
	}
	remaining := e.lim.MaxBytes - e.written
	if size > remaining {
		return refuse(ErrTooLarge, nil, "archive entry %s declares %d bytes; the archive may not unpack to more than %d bytes", quote(name), size, e.lim.MaxBytes)
	}
	if err := e.claim(p, name, kFile); err != nil {
		return ignoreSkip(err)
	}
	if isGitConfig(p) {
		return e.gitConfig(p, name, r, remaining)
	}
	perm := os.FileMode(0o644)
	if exec {
		perm = 0o755
	}
	f, err := e.root.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, perm)
	if err != nil {
		return fmt.Errorf("create file: %w", err)
	}
	n, err := io.CopyBuffer(f, io.LimitReader(&ctxReader{ctx: e.ctx, r: r}, remaining+1), e.buf)
	e.written += n
	if err == nil && n > remaining {
		err = refuse(ErrTooLarge, nil, "the archive unpacks to more than %d bytes", e.lim.MaxBytes)
	}
	if err == nil {
		err = f.Chmod(perm) // the umask must not drop the exec bit
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("write file: %w", cerr)
	}
	if err != nil {
		return err
	}
	e.files++
	return nil
}

func (e *extractor) symlink(name, target string) error {
	p, err := cleanName(name)
	if err != nil {
		return err
	}
	if p == "" {
		return refuse(ErrUnsafePath, nil, "archive entry %s: a symlink cannot replace the root directory", quote(name))
	}
	if gitIndex(strings.Split(p, "/")) >= 0 {
		// .git holds only directories and regular files: a link there (or
		// a .git that is a link) would make the identity reader or a tool
		// see data the sanitiser never saw (host-rce-gitconfig-symlink-archive).
		return refuse(ErrUnsafeLink, nil, "archive entry %s: symbolic links are not allowed in or as .git", quote(name))
	}
	if skip, err := gitEntry(p, name, false); err != nil || skip {
		if skip {
			e.seen[p] = kSkipped
		}
		return err
	}
	switch {
	case target == "":
		return refuse(ErrUnsafeLink, nil, "archive symlink %s has an empty target", quote(name))
	case len(target) > maxLinkTarget || strings.ContainsRune(target, 0):
		return refuse(ErrUnsafeLink, nil, "archive symlink %s has an invalid target", quote(name))
	case strings.HasPrefix(target, "/"):
		return refuse(ErrUnsafeLink, nil, "archive symlink %s points to an absolute path", quote(name))
	}
	if t := path.Join(path.Dir(p), target); t == ".." || strings.HasPrefix(t, "../") {
		return refuse(ErrUnsafeLink, nil, "archive symlink %s points outside the source tree", quote(name))
	}
	if err := e.claim(p, name, kSymlink); err != nil {
		return ignoreSkip(err)
	}
	if err := e.root.Symlink(target, p); err != nil {
		return fmt.Errorf("symlink: %w", err)
	}
	e.links = append(e.links, p)
	return nil
}

// checkLinks resolves every symlink inside the root (os.Root refuses any
// resolution that leaves it): the lexical check per link cannot see chains
// such as `s -> .` plus `e -> s/..`.
func (e *extractor) checkLinks() error {
	for _, l := range e.links {
		_, err := e.root.Stat(l)
		if err == nil || errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			continue // resolves inside, or dangling inside
		}
		return refuse(ErrUnsafeLink, err, "archive symlink %s resolves outside the source tree or loops", quote(l))
	}
	return nil
}

// zip extracts a ZIP archive after checking its central directory against
// the file: entries must lie inside the file and not overlap (overlapping
// entries are how "lying" directories build non-recursive zip bombs).
func (e *extractor) zip(f *os.File, size int64) error {
	if err := scanCentralDir(f, size, e.lim.MaxEntries); err != nil {
		return err
	}
	zr, err := zip.NewReader(f, size)
	if err != nil {
		return refuse(ErrCorrupt, err, "source_data is not a valid ZIP archive (truncated or corrupt)")
	}
	if len(zr.File) > e.lim.MaxEntries {
		return refuse(ErrTooManyEntries, nil, "archive has more than %d entries", e.lim.MaxEntries)
	}
	type span struct {
		start, end int64
		name       string
	}
	spans := make([]span, 0, len(zr.File))
	var total uint64
	for _, zf := range zr.File {
		if zf.Flags&0x1 != 0 {
			return refuse(ErrUnsupported, nil, "archive entry %s is encrypted", quote(zf.Name))
		}
		if zf.Method != zip.Store && zf.Method != zip.Deflate {
			return refuse(ErrUnsupported, nil, "archive entry %s uses unsupported compression method %d", quote(zf.Name), zf.Method)
		}
		off, err := zf.DataOffset()
		if err != nil {
			return refuse(ErrCorrupt, err, "archive entry %s: the central directory does not match the file (truncated or lying ZIP)", quote(zf.Name))
		}
		if zf.CompressedSize64 > uint64(size) || off+int64(zf.CompressedSize64) > size {
			return refuse(ErrCorrupt, nil, "archive entry %s extends past the end of the file (truncated or lying ZIP)", quote(zf.Name))
		}
		spans = append(spans, span{off, off + int64(zf.CompressedSize64), zf.Name})
		total += zf.UncompressedSize64
		if total > uint64(e.lim.MaxBytes) {
			return refuse(ErrTooLarge, nil, "the archive declares more than %d bytes of content", e.lim.MaxBytes)
		}
		if zf.UncompressedSize64 > ratioFloor && float64(zf.UncompressedSize64) > e.lim.MaxRatio*float64(max(zf.CompressedSize64, 1)) {
			return refuse(ErrRatio, nil, "archive entry %s expands more than %g times (zip bomb)", quote(zf.Name), e.lim.MaxRatio)
		}
	}
	if total > ratioFloor && float64(total) > e.lim.MaxRatio*float64(max(size, 1)) {
		return refuse(ErrRatio, nil, "the archive expands more than %g times (zip bomb)", e.lim.MaxRatio)
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].start < spans[j].start })
	for i := 1; i < len(spans); i++ {
		if spans[i].start < spans[i-1].end {
			return refuse(ErrCorrupt, nil, "archive entries %s and %s overlap (lying central directory)", quote(spans[i-1].name), quote(spans[i].name))
		}
	}
	for _, zf := range zr.File {
		if err := e.countEntry(); err != nil {
			return err
		}
		if err := e.zipEntry(zf); err != nil {
			return err
		}
	}
	return nil
}

func (e *extractor) zipEntry(zf *zip.File) error {
	mode := zf.Mode()
	switch {
	case mode&fs.ModeSymlink != 0:
		if zf.UncompressedSize64 > maxLinkTarget {
			return refuse(ErrUnsafeLink, nil, "archive symlink %s has an invalid target", quote(zf.Name))
		}
		rc, err := zf.Open()
		if err != nil {
			return zipDataErr(zf, err)
		}
		target, err := io.ReadAll(io.LimitReader(rc, maxLinkTarget+1))
		rc.Close()
		if err != nil {
			return zipDataErr(zf, err)
		}
		return e.symlink(zf.Name, string(target))
	case mode.IsDir():
		return e.dir(zf.Name)
	case mode&(fs.ModeDevice|fs.ModeCharDevice|fs.ModeNamedPipe|fs.ModeSocket|fs.ModeIrregular) != 0:
		return refuse(ErrSpecialFile, nil, "archive entry %s is a device, FIFO or socket", quote(zf.Name))
	}
	rc, err := zf.Open()
	if err != nil {
		return zipDataErr(zf, err)
	}
	defer rc.Close()
	// archive/zip checks the size and CRC against the central directory
	// while reading; a mismatch surfaces as a read error here.
	err = e.file(zf.Name, mode.Perm()&0o111 != 0, rc, int64(zf.UncompressedSize64))
	var fe *failure.Error
	if err != nil && !errors.As(err, &fe) && e.ctx.Err() == nil && isDataErr(err) {
		return zipDataErr(zf, err)
	}
	return err
}

func isDataErr(err error) bool {
	var ce flate.CorruptInputError
	return errors.Is(err, zip.ErrChecksum) || errors.Is(err, zip.ErrFormat) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, zip.ErrAlgorithm) || errors.As(err, &ce) || errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader)
}

func zipDataErr(zf *zip.File, err error) error {
	return refuse(ErrCorrupt, err, "archive entry %s: data does not match the central directory (corrupt, truncated or lying ZIP)", quote(zf.Name))
}

// tarGz extracts a gzip-compressed tar stream.
func (e *extractor) tarGz(f *os.File, size int64) error {
	cr := &countReader{r: bufio.NewReaderSize(f, 64<<10)}
	gz, err := gzip.NewReader(cr)
	if err != nil {
		return refuse(ErrCorrupt, err, "source_data is not a valid gzip stream")
	}
	// The tar stream may carry headers and padding beyond the file bytes.
	streamMax := e.lim.MaxBytes + 1024*int64(e.lim.MaxEntries) + 1<<20
	dr := &bombReader{r: gz, compressed: cr, max: streamMax, ratio: e.lim.MaxRatio}
	tr := tar.NewReader(dr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return tarErr(err)
		}
		if err := e.countEntry(); err != nil {
			return err
		}
		switch hdr.Typeflag {
		case tar.TypeReg, '\x00':
			if hdr.Size < 0 {
				return refuse(ErrCorrupt, nil, "archive entry %s has a negative size", quote(hdr.Name))
			}
			err = e.file(hdr.Name, hdr.Mode&0o111 != 0, tr, hdr.Size)
		case tar.TypeDir:
			err = e.dir(hdr.Name)
		case tar.TypeSymlink:
			err = e.symlink(hdr.Name, hdr.Linkname)
		case tar.TypeLink:
			err = refuse(ErrUnsafeLink, nil, "archive entry %s is a hard link; hard links are not allowed", quote(hdr.Name))
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			err = refuse(ErrSpecialFile, nil, "archive entry %s is a device or FIFO", quote(hdr.Name))
		case tar.TypeXGlobalHeader:
			err = nil
		case tar.TypeGNUSparse:
			err = refuse(ErrUnsupported, nil, "archive entry %s is a sparse file; not supported", quote(hdr.Name))
		default:
			err = refuse(ErrUnsupported, nil, "archive entry %s has unsupported type %q", quote(hdr.Name), hdr.Typeflag)
		}
		if err != nil {
			return tarErr(err)
		}
	}
	// Read to the end of the gzip stream so its CRC and length are checked.
	if _, err := io.CopyBuffer(io.Discard, dr, e.buf); err != nil {
		return tarErr(err)
	}
	return nil
}

func tarErr(err error) error {
	var fe *failure.Error
	switch {
	case errors.As(err, &fe):
		return err
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, io.ErrUnexpectedEOF):
		return refuse(ErrCorrupt, err, "the gzip tarball is truncated")
	case errors.Is(err, tar.ErrHeader), errors.Is(err, tar.ErrFieldTooLong), errors.Is(err, tar.ErrInsecurePath):
		return refuse(ErrCorrupt, err, "the tarball has an invalid header")
	case isDataErr(err):
		return refuse(ErrCorrupt, err, "the gzip stream is corrupt")
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return err // our own I/O failure
	}
	if strings.HasPrefix(err.Error(), "archive/tar:") {
		return refuse(ErrCorrupt, err, "the tarball is corrupt")
	}
	return err
}

// countReader counts the bytes read through it.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// bombReader caps a decompressed stream's size and its ratio to the
// compressed bytes consumed so far.
type bombReader struct {
	r          io.Reader
	compressed *countReader
	n, max     int64
	ratio      float64
}

func (b *bombReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n += int64(n)
	if b.n > b.max {
		return n, refuse(ErrTooLarge, nil, "the tarball unpacks to more than %d bytes", b.max)
	}
	if b.n > ratioFloor && float64(b.n) > b.ratio*float64(max(b.compressed.n, 1)) {
		return n, refuse(ErrRatio, nil, "the tarball expands more than %g times (gzip bomb)", b.ratio)
	}
	return n, err
}

// ctxReader stops a copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// maxCentralDir bounds the ZIP central directory archive/zip would load
// into memory (it keeps every record, extras and comments included): about
// 180 bytes per entry for DefaultMaxEntries, with room to spare.
const maxCentralDir = 128 << 20

// scanCentralDir walks the ZIP central directory the way archive/zip will
// (from the end-of-central-directory record, ZIP64 included, at both the
// declared and the prefix-adjusted offset, record after record until one
// does not parse, whatever count the directory claims) without keeping
// anything, and refuses too many records or too many bytes before
// archive/zip allocates them.
func scanCentralDir(ra io.ReaderAt, size int64, maxEntries int) error {
	tail := min(size, 65535+22)
	buf := make([]byte, tail)
	if _, err := ra.ReadAt(buf, size-tail); err != nil && err != io.EOF {
		return nil // archive/zip reports it
	}
	i := bytes.LastIndex(buf, []byte("PK\x05\x06"))
	if i < 0 || len(buf)-i < 22 {
		return nil
	}
	end := buf[i:]
	eocdPos := size - tail + int64(i)
	dirSize := uint64(le32(end[12:]))
	dirOff := uint64(le32(end[16:]))
	if le16(end[10:]) == 0xffff || dirSize == 0xffffffff || dirOff == 0xffffffff {
		var loc [20]byte
		if eocdPos >= 20 {
			if _, err := ra.ReadAt(loc[:], eocdPos-20); err == nil && string(loc[:4]) == "PK\x06\x07" {
				var e64 [56]byte
				if off := int64(le64(loc[8:])); off >= 0 && off < size {
					if _, err := ra.ReadAt(e64[:], off); err == nil && string(e64[:4]) == "PK\x06\x06" {
						dirSize, dirOff = le64(e64[40:]), le64(e64[48:])
					}
				}
			}
		}
	}
	starts := []int64{int64(dirOff)}
	if adj := eocdPos - int64(dirSize); adj != int64(dirOff) {
		starts = append(starts, adj)
	}
	for _, start := range starts {
		if start < 0 || start >= size {
			continue
		}
		br := bufio.NewReaderSize(io.NewSectionReader(ra, start, size-start), 64<<10)
		var n int
		var bytesRead int64
		hdr := make([]byte, 46)
		for {
			if _, err := io.ReadFull(br, hdr); err != nil || string(hdr[:4]) != "PK\x01\x02" {
				break
			}
			skip := int64(le16(hdr[28:])) + int64(le16(hdr[30:])) + int64(le16(hdr[32:]))
			if d, err := br.Discard(int(skip)); err != nil || int64(d) != skip {
				break
			}
			n++
			bytesRead += 46 + skip
			if n > maxEntries {
				return refuse(ErrTooManyEntries, nil, "archive has more than %d entries", maxEntries)
			}
			if bytesRead > maxCentralDir {
				return refuse(ErrTooLarge, nil, "the ZIP central directory is larger than %d bytes", maxCentralDir)
			}
		}
	}
	return nil
}

func le16(b []byte) uint16 { return uint16(b[0]) | uint16(b[1])<<8 }
func le32(b []byte) uint32 { return uint32(le16(b)) | uint32(le16(b[2:]))<<16 }
func le64(b []byte) uint64 { return uint64(le32(b)) | uint64(le32(b[4:]))<<32 }
