package source

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"io/fs"
	"testing"
)

// zent is one entry of a generated ZIP.
type zent struct {
	name   string
	body   string
	mode   fs.FileMode // 0 = 0644 regular
	method uint16      // 0 = Deflate
	size   int         // >0: body is size zero bytes
}

func zipOf(t testing.TB, ents ...zent) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range ents {
		h := &zip.FileHeader{Name: e.name, Method: zip.Deflate}
		if e.method != 0 {
			h.Method = e.method
		}
		if e.mode == 0 {
			e.mode = 0o644
		}
		h.SetMode(e.mode)
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		if e.size > 0 {
			chunk := make([]byte, 1<<20)
			for left := e.size; left > 0; left -= len(chunk) {
				w.Write(chunk[:min(left, len(chunk))])
			}
		} else {
			w.Write([]byte(e.body))
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// zipCD calls fn for each central directory record of z (a copy), giving
// the record's bytes so fields can be patched.
func zipCD(z []byte, fn func(i int, rec []byte)) []byte {
	z = bytes.Clone(z)
	eocd := bytes.LastIndex(z, []byte("PK\x05\x06"))
	off := int(binary.LittleEndian.Uint32(z[eocd+16:]))
	for i := 0; off+46 <= len(z) && bytes.Equal(z[off:off+4], []byte("PK\x01\x02")); i++ {
		n := int(binary.LittleEndian.Uint16(z[off+28:])) + int(binary.LittleEndian.Uint16(z[off+30:])) + int(binary.LittleEndian.Uint16(z[off+32:]))
		fn(i, z[off:off+46+n])
		off += 46 + n
	}
	return z
}

// tent is one entry of a generated tarball.
type tent struct {
	name     string
	body     string
	typ      byte // 0 = regular
	mode     int64
	link     string
	size     int64 // >0 with zero fill: body of that many zero bytes
	declared int64 // >0: header size, body truncated to size (a lying header)
}

func tgzOf(t testing.TB, ents ...tent) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	tw := tar.NewWriter(gz)
	for _, e := range ents {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		h := &tar.Header{Name: e.name, Typeflag: typ, Mode: mode, Linkname: e.link, Format: tar.FormatPAX}
		if typ == tar.TypeReg {
			h.Size = int64(len(e.body))
			if e.size > 0 {
				h.Size = e.size
			}
			if e.declared > 0 {
				h.Size = e.declared
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		switch {
		case e.size > 0:
			chunk := make([]byte, 1<<20)
			for left := e.size; left > 0; left -= int64(len(chunk)) {
				tw.Write(chunk[:min(left, int64(len(chunk)))])
			}
		case typ == tar.TypeReg:
			tw.Write([]byte(e.body))
		}
		if e.declared > 0 {
			// Leave the tar unfinished: the header lies about what follows.
			gz.Close()
			return buf.Bytes()
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	gz.Close()
	return buf.Bytes()
}
