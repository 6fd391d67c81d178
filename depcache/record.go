package depcache

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
)

// recordMagic starts every fingerprint record. The records are binary, not
// JSON: a large module's record names tens of thousands of files, and it is
// read back on every reuse (docs/benchmarks.md: decoding JSON was a tenth of
// a warm Go fetch).
const recordMagic = "kettle-depcache-record-1\n"

// recordData is what the trusted process saw of an entry when it sealed it.
type recordData struct {
	Kind   string
	Digest string
	Bytes  int64 // allocated bytes of the entry (its budget charge)
	Files  []fp  // sorted by path, each once; "." (the entry's directory) first
}

// fp is the fingerprint of one name in an entry.
type fp struct {
	Path  string
	Dir   bool
	Size  int64
	Ino   uint64
	Mtime int64
	Ctime int64
}

var errBadRecord = errors.New("malformed record")

func (r *recordData) encode() []byte {
	b := []byte(recordMagic)
	b = appendString(b, r.Kind)
	b = appendString(b, r.Digest)
	b = binary.AppendVarint(b, r.Bytes)
	b = binary.AppendUvarint(b, uint64(len(r.Files)))
	for _, f := range r.Files {
		b = appendString(b, f.Path)
		flag := byte(0)
		if f.Dir {
			flag = 1
		}
		b = append(b, flag)
		b = binary.AppendVarint(b, f.Size)
		b = binary.AppendUvarint(b, f.Ino)
		b = binary.AppendVarint(b, f.Mtime)
		b = binary.AppendVarint(b, f.Ctime)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// decodeRecord parses a record. headerOnly stops after the byte charge
// (eviction needs no more). Every path must be local (filepath.IsLocal),
// sorted and unique, with "." first: check stats them under the entry.
func decodeRecord(data []byte, headerOnly bool) (*recordData, error) {
	d := decoder{b: data}
	if !bytes.HasPrefix(data, []byte(recordMagic)) {
		return nil, fmt.Errorf("%w: no magic", errBadRecord)
	}
	d.b = d.b[len(recordMagic):]
	r := &recordData{Kind: d.string(), Digest: d.string(), Bytes: d.varint()}
	if d.err != nil || headerOnly {
		return r, d.err
	}
	n := d.uvarint()
	// Each fingerprint takes at least 7 bytes: bound the allocation.
	if d.err != nil || n == 0 || n > uint64(len(d.b))/7 {
		return nil, fmt.Errorf("%w: file count", errBadRecord)
	}
	r.Files = make([]fp, 0, n)
	for i := uint64(0); i < n; i++ {
		f := fp{Path: d.string()}
		switch d.byte() {
		case 0:
		case 1:
			f.Dir = true
		default:
			d.fail()
		}
		f.Size, f.Ino, f.Mtime, f.Ctime = d.varint(), d.uvarint(), d.varint(), d.varint()
		if d.err != nil {
			return nil, d.err
		}
		switch {
		case i == 0 && (f.Path != "." || !f.Dir):
			return nil, fmt.Errorf("%w: no root", errBadRecord)
		case i > 0 && (!filepath.IsLocal(f.Path) || filepath.Clean(f.Path) != f.Path || f.Path == "."),
			i > 1 && f.Path <= r.Files[i-1].Path:
			return nil, fmt.Errorf("%w: path %q", errBadRecord, f.Path)
		}
		r.Files = append(r.Files, f)
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: trailing bytes", errBadRecord)
	}
	return r, nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated", errBadRecord)
	}
	d.b = nil
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if len(d.b) == 0 {
		d.fail()
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) string() string {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
