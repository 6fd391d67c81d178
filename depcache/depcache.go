// Package depcache is the dependency cache shared between jobs: a
// content-addressed store of dependencies whose key is the digest the
// lockfile pins (go.sum's h1, a Cargo.lock checksum, a pnpm integrity),
// never a name or version alone.
//
// Only the trusted process writes it, and only what it has verified against
// that digest: a fill is staged in the cache's tmp/ (the trusted process's
// own copy of the bytes, never a link to a file a build made), sealed
// (files read-only, no symlink, no hard link, no special file), verified by
// the caller, fingerprinted, and renamed into place. Sandboxes get the
// entries directory read-only; nothing a build runs can write it.
//
// Every reuse checks the entry against the fingerprint record written when
// it was filled: the same names, types and sizes, one link per file, the
// same inode, mtime and ctime (which nothing but the kernel sets, and
// every write, chmod or link changes). An entry that does not match is
// removed and reported missing, so the caller fetches it again.
//
// The cache is bounded: after each fill, entries are evicted in order of
// last use until the whole fits the byte budget. Entries a job holds
// (Lease) are never evicted under it; that holds across processes sharing
// the directory (a shared flock on the entry's record).
//
// Layout under the cache directory:
//
//	entries/<name>/   an entry (a directory, laid out by the caller)
//	records/<name>    its fingerprint record (JSON), mtime = last use
//	tmp/              staged fills
//	lock              flock held while entries are added or evicted
//
// where <name> is the hex sha256 of the key's kind and digest.
package depcache

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kettle-build/kettle/internal/rmtree"
)

// DefaultSize is the default byte budget (--dep-cache-size).
const DefaultSize = 4 << 30

// MaxRecordBytes bounds a fingerprint record read back.
const MaxRecordBytes = 64 << 20

// ErrTooLarge is returned by Put for an entry larger than the whole budget.
var ErrTooLarge = errors.New("depcache: entry larger than the cache budget")

// Key names an entry: Kind says what the digest is of and how it is
// computed ("go-h1", "go-mod-h1", "cargo-sha256", "pnpm-integrity"…),
// Digest is the lockfile's text for it.
type Key struct{ Kind, Digest string }

func (k Key) name() string {
	s := sha256.Sum256([]byte(k.Kind + "\x00" + k.Digest))
	return hex.EncodeToString(s[:])
}

func (k Key) String() string { return k.Kind + ":" + k.Digest }

// Cache is a shared dependency cache directory. Its methods are safe for
// concurrent use, also by several processes on one directory.
type Cache struct {
	dir    string
	budget int64
	log    *slog.Logger
	mu     sync.Mutex // serialises this process's fills (the flock serialises processes)
}

// Open opens (creating it) the cache at dir with a byte budget (> 0). The
// directory and its subdirectories must be real directories owned by this
// process's uid and writable by nobody else.
func Open(dir string, budget int64, log *slog.Logger) (*Cache, error) {
	if budget <= 0 {
		return nil, errors.New("depcache: the budget must be positive")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("depcache: %w", err)
	}
	for _, d := range []string{dir, filepath.Join(dir, "entries"), filepath.Join(dir, "records"), filepath.Join(dir, "tmp")} {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("depcache: %w", err)
		}
		if err := checkOwnDir(d); err != nil {
			return nil, err
		}
	}
	c := &Cache{dir: dir, budget: budget, log: log}
	unlock, err := c.lock()
	if err != nil {
		return nil, err
	}
	c.recountLocked()
	unlock()
	// Stale fills of a process that died.
	if ents, err := os.ReadDir(filepath.Join(dir, "tmp")); err == nil {
		for _, e := range ents {
			if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > time.Hour {
				rmtree.RemoveAll(filepath.Join(dir, "tmp", e.Name()))
			}
		}
	}
	return c, nil
}

// checkOwnDir refuses a cache directory that is a symlink, not ours, or
// writable by group or others: whoever could write it could plant entries.
func checkOwnDir(d string) error {
	var st unix.Stat_t
	if err := unix.Lstat(d, &st); err != nil {
		return fmt.Errorf("depcache: %w", err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Errorf("depcache: %s is not a directory (a symlink?)", d)
	case int(st.Uid) != os.Geteuid():
		return fmt.Errorf("depcache: %s is owned by uid %d, not this process's %d", d, st.Uid, os.Geteuid())
	case st.Mode&0o022 != 0:
		return fmt.Errorf("depcache: %s is writable by group or others (mode %o)", d, st.Mode&0o777)
	}
	return nil
}

// Dir is the cache directory.
func (c *Cache) Dir() string { return c.dir }

// EntriesDir holds the entries: the one directory a sandbox gets
// (read-only) to read what a job's cache links to.
func (c *Cache) EntriesDir() string { return filepath.Join(c.dir, "entries") }

// Budget is the byte budget.
func (c *Cache) Budget() int64 { return c.budget }

func (c *Cache) entry(k Key) string  { return filepath.Join(c.dir, "entries", k.name()) }
func (c *Cache) record(k Key) string { return filepath.Join(c.dir, "records", k.name()) }

// Stage returns a new empty directory in the cache's tmp/ (same file
// system as the entries, so Put renames it) for the caller to fill with
// its own copy of a dependency. Remove it when not passed to Put.
func (c *Cache) Stage() (string, error) {
	return os.MkdirTemp(filepath.Join(c.dir, "tmp"), "fill-")
}

// Put seals the staged directory (made by Stage and filled by the caller),
// calls verify on it (the caller checks the bytes against k.Digest there;
// nothing changes them after), records its fingerprint and moves it into
// the cache as k. If k is already there, the staged copy is dropped (two
// jobs filling one entry). Then least recently used entries are evicted
// until the cache fits its budget. staged is gone when Put returns.
func (c *Cache) Put(k Key, staged string, verify func(dir string) error) error {
	defer rmtree.RemoveAll(staged)
	if err := seal(staged); err != nil {
		return fmt.Errorf("depcache: seal %s: %w", k, err)
	}
	if err := verify(staged); err != nil {
		return fmt.Errorf("depcache: verify %s: %w", k, err)
	}
	files, size, err := fingerprint(staged)
	if err != nil {
		return fmt.Errorf("depcache: %s: %w", k, err)
	}
	if size > c.budget {
		return ErrTooLarge
	}
	rec := &recordData{Kind: k.Kind, Digest: k.Digest, Bytes: size, Files: files}
	unlock, err := c.lock()
	if err != nil {
		return err
	}
	defer unlock()
	dst, recPath := c.entry(k), c.record(k)
	if _, err := os.Lstat(recPath); err == nil {
		return nil // filled meanwhile by another job; Get checks it
	}
	// An entry without a record is what a crash between the two renames
	// leaves (under this lock nobody else is between them): replace it.
	if _, err := os.Lstat(dst); err == nil {
		if err := rmtree.RemoveAll(dst); err != nil {
			return fmt.Errorf("depcache: remove orphan %s: %w", k, err)
		}
	}
	if err := os.Rename(staged, dst); err != nil {
		return fmt.Errorf("depcache: %w", err)
	}
	// rename keeps inodes and times (the directory's ctime changes: its
	// ".." entry moved), so fingerprint the directory itself again.
	f, err := statFP(dst, ".")
	if err != nil {
		rmtree.RemoveAll(dst)
		return fmt.Errorf("depcache: %w", err)
	}
	files[0] = f
	if err := writeFileAtomic(recPath, rec.encode()); err != nil {
		rmtree.RemoveAll(dst)
		return fmt.Errorf("depcache: %w", err)
	}
	c.addUsageLocked(size)
	c.evictLocked(k)
	return nil
}

// Has reports whether k has a record (without checking the entry: a fill
// uses it to skip copying what is there already; Get checks).
func (c *Cache) Has(k Key) bool {
	_, err := os.Lstat(c.record(k))
	return err == nil
}

// Lease is the set of entries a job uses: while it is held, no process
// evicts them. Release it when the job is over.
type Lease struct {
	c     *Cache
	mu    sync.Mutex
	files []*os.File
}

// NewLease starts an empty lease.
func (c *Cache) NewLease() *Lease { return &Lease{c: c} }

// Release lets the lease's entries be evicted again.
func (l *Lease) Release() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, f := range l.files {
		f.Close() // drops the flock
	}
	l.files = nil
}

// Get returns the directory of entry k, checked against its fingerprint
// record, and adds it to lease l (which must not be released yet). A
// missing entry gives ok false; a damaged one (changed, linked, replaced,
// extra or missing files) is removed and also gives ok false, so the
// caller fetches it again. The directory is read-only for everyone but
// this process, which never writes an entry after Put.
func (c *Cache) Get(k Key, l *Lease) (dir string, ok bool) {
	recPath := c.record(k)
	f, err := os.OpenFile(recPath, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			c.drop(k, fmt.Sprintf("record unreadable: %v", err))
		}
		return "", false
	}
	keep := false
	defer func() {
		if !keep {
			f.Close()
		}
	}()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH); err != nil {
		return "", false
	}
	// The record may have been evicted between open and flock.
	var fst, pst unix.Stat_t
	if unix.Fstat(int(f.Fd()), &fst) != nil || unix.Lstat(recPath, &pst) != nil || fst.Ino != pst.Ino || fst.Dev != pst.Dev {
		return "", false
	}
	if fst.Mode&unix.S_IFMT != unix.S_IFREG || fst.Nlink != 1 || fst.Size > MaxRecordBytes {
		f.Close()
		keep = true // closed
		c.drop(k, "record is not a plain file")
		return "", false
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxRecordBytes))
	var rec *recordData
	if err == nil {
		rec, err = decodeRecord(data, false)
	}
	if err == nil && (rec.Kind != k.Kind || rec.Digest != k.Digest) {
		err = errors.New("record names another key")
	}
	dir = c.entry(k)
	if err == nil {
		err = check(dir, rec.Files)
	}
	if err != nil {
		f.Close()
		keep = true
		c.drop(k, err.Error())
		return "", false
	}
	now := time.Now()
	_ = os.Chtimes(recPath, now, now) // last use, for LRU eviction
	l.mu.Lock()
	l.files = append(l.files, f)
	l.mu.Unlock()
	keep = true
	return dir, true
}

// drop removes a damaged entry.
func (c *Cache) drop(k Key, why string) {
	c.log.Warn("dependency cache entry refused", "key", k.String(), "reason", why)
	unlock, err := c.lock()
	if err != nil {
		return
	}
	defer unlock()
	c.removeLocked(k.name(), true)
}

// removeLocked removes entry name if no lease holds it, or with force
// even then (a damaged entry: whoever holds it checked it before the
// damage, and must not get it again).
func (c *Cache) removeLocked(name string, force bool) bool {
	recPath := filepath.Join(c.dir, "records", name)
	f, err := os.OpenFile(recPath, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	var charged int64
	if err == nil {
		defer f.Close()
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil && !force {
			return false // in use
		}
		charged = readCharge(f)
	}
	os.Remove(recPath)
	rmtree.RemoveAll(filepath.Join(c.dir, "entries", name))
	if charged > 0 {
		c.addUsageLocked(-charged)
	}
	return true
}

// readCharge is the byte charge in a record's header (0 if unreadable).
func readCharge(f *os.File) int64 {
	buf := make([]byte, 4096)
	n, _ := io.ReadFull(f, buf)
	r, err := decodeRecord(buf[:n], true)
	if err != nil || r.Bytes < 0 {
		return 0
	}
	return r.Bytes
}

// lock takes the cache-wide lock (this process's mutex, then the flock).
func (c *Cache) lock() (func(), error) {
	c.mu.Lock()
	f, err := os.OpenFile(filepath.Join(c.dir, "lock"), os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		c.mu.Unlock()
		return nil, fmt.Errorf("depcache: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		c.mu.Unlock()
		return nil, fmt.Errorf("depcache: %w", err)
	}
	return func() { f.Close(); c.mu.Unlock() }, nil
}

// Usage is the bytes the cache's entries are charged and their number,
// counted from the records.
func (c *Cache) Usage() (bytes int64, entries int) {
	for _, r := range c.records() {
		bytes += r.bytes
		entries++
	}
	return bytes, entries
}

// The running total of the entries' charges is kept in the file "usage"
// (under the lock), so a fill costs the same with ten entries or ten
// thousand: summing every record on each fill made filling a large Go
// project's 2,000 entries quadratic (docs/benchmarks.md). Open counts it
// afresh from the records; eviction, when the total is over budget,
// counts it again while it looks for the least recently used.
func (c *Cache) usagePath() string { return filepath.Join(c.dir, "usage") }

func (c *Cache) readUsageLocked() (int64, bool) {
	b, err := os.ReadFile(c.usagePath())
	if err != nil {
		return 0, false
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return v, err == nil && v >= 0
}

func (c *Cache) writeUsageLocked(v int64) {
	_ = writeFileAtomic(c.usagePath(), []byte(strconv.FormatInt(max(v, 0), 10)+"\n"))
}

// addUsageLocked adds delta to the total (recounting when it is missing).
func (c *Cache) addUsageLocked(delta int64) {
	v, ok := c.readUsageLocked()
	if !ok {
		c.recountLocked()
		return
	}
	c.writeUsageLocked(v + delta)
}

func (c *Cache) recountLocked() int64 {
	var total int64
	for _, r := range c.records() {
		total += r.bytes
	}
	c.writeUsageLocked(total)
	return total
}

type recInfo struct {
	name  string
	used  time.Time
	bytes int64
}

// records lists the records with their last use and charge.
func (c *Cache) records() []recInfo {
	dir := filepath.Join(c.dir, "records")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []recInfo
	for _, e := range ents {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		f, err := os.OpenFile(filepath.Join(dir, e.Name()), os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
		if err != nil {
			continue
		}
		charge := readCharge(f)
		f.Close()
		out = append(out, recInfo{name: e.Name(), used: info.ModTime(), bytes: charge})
	}
	return out
}

// evictLocked removes least recently used entries (not held by a lease)
// until the cache fits its budget. The entry just added goes last.
func (c *Cache) evictLocked(added Key) {
	if v, ok := c.readUsageLocked(); ok && v <= c.budget {
		return
	}
	recs := c.records()
	var total int64
	for _, r := range recs {
		total += r.bytes
	}
	defer func() { c.writeUsageLocked(total) }()
	if total <= c.budget {
		return
	}
	newest := added.name()
	sort.Slice(recs, func(i, j int) bool {
		if (recs[i].name == newest) != (recs[j].name == newest) {
			return recs[j].name == newest
		}
		return recs[i].used.Before(recs[j].used)
	})
	for _, r := range recs {
		if total <= c.budget {
			break
		}
		if c.removeLocked(r.name, false) {
			total -= r.bytes
			c.log.Info("dependency cache entry evicted", "entry", r.name, "bytes", r.bytes, "last_use", r.used)
		}
	}
}

// seal makes the staged tree read-only (keeping executable bits) and
// refuses anything but directories and regular files with one link.
func seal(root string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			return os.Chmod(p, 0o755)
		case unix.S_IFREG:
			if st.Nlink != 1 {
				return fmt.Errorf("%s: a hard link", rel(root, p))
			}
			// Read-only; an executable bit stays (a crate's scripts).
			if st.Mode&0o111 != 0 {
				return os.Chmod(p, 0o555)
			}
			return os.Chmod(p, 0o444)
		default:
			return fmt.Errorf("%s: not a regular file or directory", rel(root, p))
		}
	})
}

// fingerprint records every name under root and the bytes it occupies.
func fingerprint(root string) ([]fp, int64, error) {
	var out []fp
	var size int64
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		f, err := toFP(rel(root, p), &st)
		if err != nil {
			return err
		}
		size += st.Blocks * 512
		out = append(out, f)
		return nil
	})
	// "." first (a name may sort before it: "+x", "-x"), then by path.
	sort.Slice(out, func(i, j int) bool {
		if (out[i].Path == ".") != (out[j].Path == ".") {
			return out[i].Path == "."
		}
		return out[i].Path < out[j].Path
	})
	return out, size, err
}

func statFP(root, r string) (fp, error) {
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(root, r), &st); err != nil {
		return fp{}, err
	}
	return toFP(r, &st)
}

func toFP(r string, st *unix.Stat_t) (fp, error) {
	f := fp{Path: r, Size: st.Size, Ino: st.Ino, Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano()}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		f.Dir, f.Size = true, 0
	case unix.S_IFREG:
		if st.Nlink != 1 {
			return fp{}, fmt.Errorf("%s: a hard link", r)
		}
	default:
		return fp{}, fmt.Errorf("%s: not a regular file or directory", r)
	}
	return f, nil
}

// check compares the tree at dir with its record: each recorded name still
// the same directory or single-link regular file, with the same inode,
// size, mtime and ctime. Directories are not listed: a name added to,
// removed from or renamed in a directory changes that directory's mtime
// and ctime, which are recorded, so equal fingerprints of every recorded
// name mean no name was added either (and the kernel alone sets ctime).
// Each name is stat'ed relative to the entry's directory, opened without
// following a symlink; none is followed (a directory replaced by a symlink
// changes its parent's times, checked first: parents sort before children).
func check(dir string, want []fp) error {
	if len(want) == 0 || want[0].Path != "." {
		return errors.New("record has no root")
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	for _, w := range want {
		if w.Path == "." {
			err = unix.Fstat(fd, &st)
		} else {
			err = unix.Fstatat(fd, w.Path, &st, unix.AT_SYMLINK_NOFOLLOW)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", w.Path, err)
		}
		got, err := toFP(w.Path, &st)
		if err != nil {
			return err
		}
		if got != w {
			return fmt.Errorf("%s: changed since it was verified", w.Path)
		}
	}
	return nil
}

func rel(root, p string) string {
	r, err := filepath.Rel(root, p)
	if err != nil {
		return p
	}
	return filepath.ToSlash(r)
}

// writeFileAtomic writes data to a temp file beside name and renames it.
func writeFileAtomic(name string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(name), ".tmp-")
	if err != nil {
		return err
	}
	// No fsync: a record or total a crash leaves short fails to decode,
	// and the entry is fetched again or the total counted again.
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), name)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// CopyFile copies the regular file src (opened without following a
// symlink, refused unless regular) to dst, a new file of the caller's.
// Fills use it so the cache holds the trusted process's own inode, never a
// link to a file a build made.
func CopyFile(src, dst string) (int64, error) {
	in, err := os.OpenFile(src, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return 0, err
	}
	if !fi.Mode().IsRegular() {
		return 0, fmt.Errorf("%s: not a regular file", filepath.Base(src))
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o644)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return n, err
}

// CopyTree copies the tree at src (directories and regular files only,
// nothing followed) into dst, which must exist. maxFiles bounds the names.
func CopyTree(src, dst string, maxFiles int) error {
	n := 0
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		r := rel(src, p)
		if r == "." {
			return nil
		}
		if n++; n > maxFiles {
			return fmt.Errorf("more than %d files", maxFiles)
		}
		target := filepath.Join(dst, filepath.FromSlash(r))
		switch t := d.Type(); {
		case d.IsDir():
			return os.Mkdir(target, 0o755)
		case t.IsRegular():
			_, err := CopyFile(p, target)
			return err
		default:
			return fmt.Errorf("%s: not a regular file or directory", strings.TrimPrefix(r, "./"))
		}
	})
}
