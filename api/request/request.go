// Package request parses POST /build bodies as they stream in: the JSON API
// (source_data base64 decoded straight to a spool file, never held whole in
// memory) and the older multipart API. Every rejection is an *Error carrying
// the HTTP status and a one-line, client-safe message, in the order of
// docs/api.md.
package request

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"os"
	"unicode/utf8"

	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/jobs"
	"github.com/kettle-build/kettle/source"
)

// Build is a parsed, validated POST /build submission. Source is the job's
// source as jobs stores it; Source.ArchivePath (when an archive was sent)
// is a file in the spool dir holding the DECODED archive, its digest and
// size filled in; the caller owns and removes it (Remove).
type Build struct {
	Nonce  []byte // nil when the multipart API sent none
	Source jobs.Source
}

// Remove deletes the spooled archive, if any.
func (b *Build) Remove() error {
	if b == nil || b.Source.ArchivePath == "" {
		return nil
	}
	err := os.Remove(b.Source.ArchivePath)
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	return err
}

// CheckRepo applies the server's repository policy (source.CheckRepo) to a
// repo_url submission; a refusal is a 400 with the policy's reason.
func (b *Build) CheckRepo(ctx context.Context, p source.Policy) error {
	if b.Source.URL == "" {
		return nil
	}
	err := source.CheckRepo(ctx, b.Source.URL, b.Source.Ref, p)
	if err == nil {
		return nil
	}
	var fe *failure.Error
	if errors.As(err, &fe) {
		return &Error{Status: http.StatusBadRequest, Msg: fe.Error(), Err: err}
	}
	return &Error{Status: http.StatusServiceUnavailable, Msg: "could not check repo_url; try again", Err: err}
}

// Error is a rejected request: the HTTP status and a one-line plain-text
// message safe to show the client. Err (never shown) is the cause, for logs.
type Error struct {
	Status int
	Msg    string
	Err    error
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Err }

func errorf(status int, format string, args ...any) *Error {
	return &Error{Status: status, Msg: fmt.Sprintf(format, args...)}
}

// Field limits for the small string fields.
const (
	maxFieldLen = 8 << 10
	maxKeyLen   = 1 << 10
	maxDepth    = 64
	spoolBuf    = 256 << 10
)

// bodyLimit is the most request bytes accepted for maxUpload archive bytes:
// base64 adds a third, line breaks (escaped \r\n every 64 characters) up to
// a tenth more, plus room for the other fields.
func bodyLimit(maxUpload int64) int64 {
	return (maxUpload/3+1)*4*11/10 + 1<<20
}

// readErr maps a failure to read the body to a status: a deadline is 408,
// an over-long body 413, anything else (a client that went away) 400.
func readErr(ctx context.Context, err error) *Error {
	var mbe *http.MaxBytesError
	var ne net.Error
	switch {
	case errors.As(err, &mbe):
		return &Error{Status: http.StatusRequestEntityTooLarge, Msg: "request body too large", Err: err}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return &Error{Status: http.StatusRequestTimeout, Msg: "timed out reading the request body", Err: err}
	case ctx.Err() != nil:
		return &Error{Status: http.StatusBadRequest, Msg: "request canceled", Err: err}
	}
	return &Error{Status: http.StatusBadRequest, Msg: "could not read the request body", Err: err}
}

// limitedBody reads at most limit bytes of r, then fails with a 413; it also
// stops as soon as ctx ends.
type limitedBody struct {
	ctx   context.Context
	r     io.Reader
	left  int64
	limit int64
}

var errBodyTooLarge = errors.New("body too large")

func (l *limitedBody) Read(p []byte) (int, error) {
	if err := l.ctx.Err(); err != nil {
		return 0, err
	}
	if l.left <= 0 {
		return 0, errBodyTooLarge
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

// spool is a file in the spool dir receiving a decoded archive, hashed on
// the way in.
type spool struct {
	f     *os.File
	w     *bufio.Writer
	h     hash.Hash
	n     int64
	max   int64
	magic []byte
}

func newSpool(dir string, max int64) (*spool, error) {
	if dir == "" {
		// os.CreateTemp would pick TMPDIR, which builds may name.
		return nil, &Error{Status: http.StatusInternalServerError, Msg: "could not store the upload", Err: errors.New("no spool directory configured")}
	}
	f, err := os.CreateTemp(dir, "upload-*")
	if err != nil {
		return nil, &Error{Status: http.StatusInternalServerError, Msg: "could not store the upload", Err: err}
	}
	return &spool{f: f, w: bufio.NewWriterSize(f, spoolBuf), h: sha256.New(), max: max}, nil
}

func (s *spool) Write(p []byte) (int, error) {
	if s.n+int64(len(p)) > s.max {
		return 0, errorf(http.StatusRequestEntityTooLarge, "the archive exceeds the maximum upload size of %d bytes", s.max)
	}
	if len(s.magic) < 4 {
		s.magic = append(s.magic, p[:min(len(p), 4-len(s.magic))]...)
	}
	s.h.Write(p)
	n, err := s.w.Write(p)
	s.n += int64(n)
	if err != nil {
		return n, &Error{Status: http.StatusInternalServerError, Msg: "could not store the upload", Err: err}
	}
	return n, nil
}

// finish flushes the file and fills b's archive fields.
func (s *spool) finish(b *Build) error {
	err := s.w.Flush()
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(s.f.Name())
		return &Error{Status: http.StatusInternalServerError, Msg: "could not store the upload", Err: err}
	}
	b.Source.ArchivePath, b.Source.ArchiveSize, b.Source.ArchiveSHA256 = s.f.Name(), s.n, hex.EncodeToString(s.h.Sum(nil))
	return nil
}

func (s *spool) abort() {
	if s != nil && s.f != nil {
		s.f.Close()
		os.Remove(s.f.Name())
	}
}

// checkMagic refuses, at submit time, an archive extraction would refuse.
func (s *spool) checkMagic(field string) error {
	m := s.magic
	if len(m) >= 4 && string(m[:4]) == "PK\x03\x04" || len(m) >= 2 && m[0] == 0x1f && m[1] == 0x8b {
		return nil
	}
	return errorf(http.StatusBadRequest, "%s is neither a ZIP archive (PK) nor a gzip tarball (1f8b)", field)
}

// parseNonce decodes a hex nonce with the peer's error texts.
func parseNonce(s string, minLen int) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			r := []rune(s[i:])[0]
			return nil, errorf(http.StatusBadRequest, "invalid nonce hex: Invalid character %s at position %d", quoteRune(r), i)
		}
	}
	if len(s)%2 != 0 {
		return nil, errorf(http.StatusBadRequest, "invalid nonce hex: Odd number of digits")
	}
	n, _ := hex.DecodeString(s)
	if len(n) < minLen || len(n) > 16 {
		return nil, errorf(http.StatusBadRequest, "nonce must be %d-16 bytes", minLen)
	}
	return n, nil
}

func quoteRune(r rune) string {
	if r < 0x20 || r == 0x7f || r == 0xfffd {
		return fmt.Sprintf("%U", r)
	}
	return "'" + string(r) + "'"
}

// checkText validates a small client string field.
func checkText(field, v string) error {
	if len(v) > maxFieldLen {
		return errorf(http.StatusBadRequest, "%s is longer than %d bytes", field, maxFieldLen)
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return errorf(http.StatusBadRequest, "%s contains a control character", field)
		}
	}
	if !utf8.ValidString(v) {
		return errorf(http.StatusBadRequest, "%s is not valid UTF-8", field)
	}
	return nil
}
