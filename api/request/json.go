package request

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// ParseJSON parses a JSON POST /build body as it arrives. source_data's
// base64 is decoded to a file in spoolDir as it streams in, hashed on the
// way, and bounded by maxUpload decoded bytes; the rest of the body is
// bounded too, so memory stays constant whatever is sent. contentType is the
// request's Content-Type.
//
// Base64 is the standard alphabet with padding; line breaks (escaped as \n
// or \r\n in the JSON string, as `base64` and MIME encoders wrap lines) are
// ignored, any other character is refused. Unknown fields are ignored; a
// known field given twice is refused. null counts as absent.
//
// Errors come in docs/api.md order except that an oversized source_data is
// reported (413) as soon as it is seen: the rest of the body is not read.
func ParseJSON(ctx context.Context, contentType string, body io.Reader, spoolDir string, maxUpload int64) (b *Build, err error) {
	if mt, _, perr := mime.ParseMediaType(contentType); perr != nil || mt != "application/json" {
		return nil, errorf(http.StatusUnsupportedMediaType, "Content-Type must be application/json")
	}
	limit := bodyLimit(maxUpload)
	p := &jsonParser{
		ctx:      ctx,
		r:        bufio.NewReaderSize(&limitedBody{ctx: ctx, r: body, left: limit, limit: limit}, 64<<10),
		spoolDir: spoolDir,
		max:      maxUpload,
		seen:     map[string]bool{},
	}
	defer func() {
		if err != nil {
			p.spool.abort()
		}
	}()
	if err := p.object(); err != nil {
		return nil, p.mapErr(err)
	}
	return p.validate()
}

type jsonParser struct {
	ctx      context.Context
	r        *bufio.Reader
	spoolDir string
	max      int64
	seen     map[string]bool
	fields   map[string]*string
	spool    *spool
	off      int64 // bytes consumed, for messages
}

func malformed(format string, args ...any) *Error {
	e := errorf(http.StatusBadRequest, format, args...)
	e.Msg = "malformed JSON: " + e.Msg
	return e
}

// mapErr turns reader failures into client errors.
func (p *jsonParser) mapErr(err error) error {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e
	case errors.Is(err, errBodyTooLarge):
		return errorf(http.StatusRequestEntityTooLarge, "request body too large (the archive may be at most %d bytes)", p.max)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return malformed("unexpected end of body")
	}
	return readErr(p.ctx, err)
}

func (p *jsonParser) readByte() (byte, error) {
	c, err := p.r.ReadByte()
	if err == nil {
		p.off++
	}
	return c, err
}

// next returns the next byte that is not JSON whitespace.
func (p *jsonParser) next() (byte, error) {
	for {
		c, err := p.readByte()
		if err != nil {
			return 0, err
		}
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return c, nil
		}
	}
}

func (p *jsonParser) object() error {
	c, err := p.next()
	if err != nil {
		if err == io.EOF {
			return malformed("empty body")
		}
		return err
	}
	if c != '{' {
		return malformed("the body must be a JSON object")
	}
	for first := true; ; first = false {
		c, err := p.next()
		if err != nil {
			return err
		}
		if c == '}' && first {
			break
		}
		if c != '"' {
			return malformed("expected a field name at offset %d", p.off-1)
		}
		key, err := p.str(maxKeyLen, "field name")
		if err != nil {
			return err
		}
		if c, err = p.next(); err != nil {
			return err
		} else if c != ':' {
			return malformed("expected ':' after %s", strconv.Quote(key))
		}
		if err := p.field(key); err != nil {
			return err
		}
		if c, err = p.next(); err != nil {
			return err
		}
		if c == '}' {
			break
		}
		if c != ',' {
			return malformed("expected ',' or '}' at offset %d", p.off-1)
		}
	}
	// Only whitespace may follow the object.
	if c, err := p.next(); err == nil {
		_ = c
		return malformed("data after the JSON object")
	} else if err != io.EOF {
		return err
	}
	return nil
}

var stringFields = map[string]bool{"nonce": true, "repo_url": true, "repo_ref": true, "source_name": true}

func (p *jsonParser) field(key string) error {
	if key != "source_data" && !stringFields[key] {
		return p.skip(0)
	}
	if p.seen[key] {
		return errorf(http.StatusBadRequest, "duplicate field %s", key)
	}
	p.seen[key] = true
	c, err := p.next()
	if err != nil {
		return err
	}
	switch c {
	case 'n':
		return p.literal("ull")
	case '"':
	default:
		return errorf(http.StatusBadRequest, "%s must be a string", key)
	}
	if key == "source_data" {
		return p.sourceData()
	}
	v, err := p.str(maxFieldLen, key)
	if err != nil {
		return err
	}
	if p.fields == nil {
		p.fields = map[string]*string{}
	}
	p.fields[key] = &v
	return nil
}

func (p *jsonParser) literal(rest string) error {
	for i := 0; i < len(rest); i++ {
		c, err := p.readByte()
		if err != nil {
			return err
		}
		if c != rest[i] {
			return malformed("invalid literal at offset %d", p.off-1)
		}
	}
	return nil
}

// str reads the rest of a string (after its opening quote) of at most max
// bytes.
func (p *jsonParser) str(max int, what string) (string, error) {
	var buf []byte
	err := p.stringChunks(func(seg []byte, escaped bool) error {
		if !escaped {
			if err := noCtl(seg); err != nil {
				return err
			}
		}
		if len(buf)+len(seg) > max {
			return errorf(http.StatusBadRequest, "%s is longer than %d bytes", what, max)
		}
		buf = append(buf, seg...)
		return nil
	})
	if err != nil {
		return "", err
	}
	// Invalid UTF-8 is kept as is: the field checks refuse it rather than
	// guess at a replacement.
	return string(buf), nil
}

// stringChunks streams the rest of a JSON string to fn: runs of raw bytes
// (escaped=false) straight from the read buffer, and decoded escapes
// (escaped=true). fn must refuse raw control characters (noCtl), as JSON
// requires; the base64 decoder does so in its own per-byte pass.
func (p *jsonParser) stringChunks(fn func(seg []byte, escaped bool) error) error {
	var esc [8]byte
	for {
		if p.r.Buffered() == 0 {
			if _, err := p.r.Peek(1); err != nil {
				return err
			}
		}
		chunk, _ := p.r.Peek(p.r.Buffered())
		i := bytes.IndexByte(chunk, '"')
		if j := bytes.IndexByte(chunk, '\\'); j >= 0 && (i < 0 || j < i) {
			i = j
		}
		if i < 0 {
			i = len(chunk)
		}
		if i > 0 {
			if err := fn(chunk[:i], false); err != nil {
				return err
			}
			p.r.Discard(i)
			p.off += int64(i)
			continue
		}
		c, _ := p.readByte()
		if c == '"' {
			return nil
		}
		// An escape.
		e, err := p.readByte()
		if err != nil {
			return err
		}
		var out []byte
		switch e {
		case '"', '\\', '/':
			esc[0] = e
			out = esc[:1]
		case 'b':
			out = append(esc[:0], '\b')
		case 'f':
			out = append(esc[:0], '\f')
		case 'n':
			out = append(esc[:0], '\n')
		case 'r':
			out = append(esc[:0], '\r')
		case 't':
			out = append(esc[:0], '\t')
		case 'u':
			r, err := p.hex4()
			if err != nil {
				return err
			}
			if utf16.IsSurrogate(r) {
				// A pair is \uD8xx\uDCxx; a lone half becomes U+FFFD.
				r2 := rune(-1)
				if b, _ := p.r.Peek(2); len(b) == 2 && b[0] == '\\' && b[1] == 'u' {
					p.r.Discard(2)
					p.off += 2
					if r2, err = p.hex4(); err != nil {
						return err
					}
				}
				if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
					r = d
				} else {
					r = utf8.RuneError
					if r2 >= 0 {
						out = utf8.AppendRune(esc[:0], r)
						r = r2
						if utf16.IsSurrogate(r) {
							r = utf8.RuneError
						}
					}
				}
			}
			out = utf8.AppendRune(out, r)
		default:
			return malformed("invalid escape %q in a string", []byte{'\\', e})
		}
		if err := fn(out, true); err != nil {
			return err
		}
	}
}

// noCtl refuses raw control characters in a string.
func noCtl(seg []byte) error {
	for _, c := range seg {
		if c < 0x20 {
			return malformed("control character in a string")
		}
	}
	return nil
}

func skipString(seg []byte, escaped bool) error {
	if escaped {
		return nil
	}
	return noCtl(seg)
}

func (p *jsonParser) hex4() (rune, error) {
	var r rune
	for range 4 {
		c, err := p.readByte()
		if err != nil {
			return 0, err
		}
		var v byte
		switch {
		case c >= '0' && c <= '9':
			v = c - '0'
		case c >= 'a' && c <= 'f':
			v = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			v = c - 'A' + 10
		default:
			return 0, malformed("invalid \\u escape in a string")
		}
		r = r<<4 | rune(v)
	}
	return r, nil
}

// skip consumes any JSON value without keeping it.
func (p *jsonParser) skip(depth int) error {
	if depth > maxDepth {
		return malformed("nesting deeper than %d", maxDepth)
	}
	c, err := p.next()
	if err != nil {
		return err
	}
	switch c {
	case '"':
		return p.stringChunks(skipString)
	case 't':
		return p.literal("rue")
	case 'f':
		return p.literal("alse")
	case 'n':
		return p.literal("ull")
	case '{', '[':
		end := byte('}')
		if c == '[' {
			end = ']'
		}
		for first := true; ; first = false {
			b, err := p.r.Peek(1)
			for err == nil && (b[0] == ' ' || b[0] == '\t' || b[0] == '\n' || b[0] == '\r') {
				p.readByte()
				b, err = p.r.Peek(1)
			}
			if err != nil {
				return err
			}
			if first && b[0] == end {
				p.readByte()
				return nil
			}
			if c == '{' {
				if k, err := p.next(); err != nil {
					return err
				} else if k != '"' {
					return malformed("expected a field name at offset %d", p.off-1)
				}
				if err := p.stringChunks(skipString); err != nil {
					return err
				}
				if k, err := p.next(); err != nil {
					return err
				} else if k != ':' {
					return malformed("expected ':' at offset %d", p.off-1)
				}
			}
			if err := p.skip(depth + 1); err != nil {
				return err
			}
			d, err := p.next()
			if err != nil {
				return err
			}
			if d == end {
				return nil
			}
			if d != ',' {
				return malformed("expected ',' or '%c' at offset %d", end, p.off-1)
			}
		}
	}
	if c == '-' || c >= '0' && c <= '9' {
		return p.number(c)
	}
	return malformed("unexpected character %s at offset %d", strconv.QuoteRune(rune(c)), p.off-1)
}

// number consumes a JSON number whose first byte c was read.
func (p *jsonParser) number(c byte) error {
	num := []byte{c}
	for {
		b, err := p.r.Peek(1)
		if err != nil {
			if err == io.EOF {
				break
			}
			return err
		}
		d := b[0]
		if !(d >= '0' && d <= '9' || d == '.' || d == 'e' || d == 'E' || d == '+' || d == '-') {
			break
		}
		if len(num) > 1024 {
			return malformed("number too long")
		}
		num = append(num, d)
		p.readByte()
	}
	if !validNumber(num) {
		return malformed("invalid number %q", num)
	}
	return nil
}

// validNumber checks the JSON number grammar.
func validNumber(s []byte) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
			n++
		}
		return n
	}
	if i < len(s) && s[i] == '0' {
		i++
	} else if digits() == 0 {
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(s)
}

// b64class classifies bytes of source_data.
var b64class = func() (t [256]byte) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	for i := range alphabet {
		t[alphabet[i]] = 1
	}
	t['='] = 2
	t['\n'], t['\r'] = 3, 3
	return t
}()

// sourceData streams the base64 string into the spool file.
func (p *jsonParser) sourceData() error {
	s, err := newSpool(p.spoolDir, p.max)
	if err != nil {
		return err
	}
	p.spool = s
	const quantum = 64 << 10 // significant characters per decode; a multiple of 4
	d := &b64decoder{buf: make([]byte, 0, quantum), out: make([]byte, quantum/4*3), w: s}
	if err := p.stringChunks(d.write); err != nil {
		return err
	}
	return d.finish()
}

type b64decoder struct {
	buf  []byte // pending significant characters
	out  []byte
	pad  bool  // '=' seen: only '=' may follow
	pos  int64 // significant characters decoded so far
	raw  int64 // characters of the string seen, for messages
	w    io.Writer
	seen bool
}

func invalidB64(format string, args ...any) *Error {
	e := errorf(http.StatusBadRequest, format, args...)
	e.Msg = "invalid base64 in source_data: " + e.Msg
	return e
}

func (d *b64decoder) write(seg []byte, escaped bool) error {
	d.seen = true
	for i := 0; i < len(seg); {
		// Copy the longest run of alphabet characters at once.
		j := i
		for j < len(seg) && b64class[seg[j]] == 1 {
			j++
		}
		if j > i {
			if d.pad {
				return invalidB64("data after '=' padding at character %d", d.raw+int64(i))
			}
			for i < j {
				n := min(j-i, cap(d.buf)-len(d.buf))
				d.buf = append(d.buf, seg[i:i+n]...)
				i += n
				if len(d.buf) == cap(d.buf) {
					if err := d.flush(); err != nil {
						return err
					}
				}
			}
			continue
		}
		c := seg[i]
		switch b64class[c] {
		case 2:
			d.pad = true
			if len(d.buf) == cap(d.buf) {
				return invalidB64("misplaced '=' padding at character %d", d.raw+int64(i))
			}
			d.buf = append(d.buf, c)
		case 3:
			if !escaped {
				return malformed("control character in a string")
			}
		default:
			if c < 0x20 && !escaped {
				return malformed("control character in a string")
			}
			if c == '-' || c == '_' {
				return invalidB64("URL-safe character %q at character %d; use the standard alphabet", c, d.raw+int64(i))
			}
			return invalidB64("illegal character %s at character %d", strconv.QuoteRune(rune(c)), d.raw+int64(i))
		}
		i++
	}
	d.raw += int64(len(seg))
	return nil
}

// flush decodes the pending characters; all but the last flush hold a
// multiple of 4 without padding.
func (d *b64decoder) flush() error {
	n, err := base64.StdEncoding.Decode(d.out, d.buf)
	if err != nil {
		var ce base64.CorruptInputError
		if errors.As(err, &ce) {
			return invalidB64("bad padding at character %d", d.pos+int64(ce))
		}
		return invalidB64("%v", err)
	}
	d.pos += int64(len(d.buf))
	d.buf = d.buf[:0]
	if n > 0 {
		if _, err := d.w.Write(d.out[:n]); err != nil {
			return err
		}
	}
	return nil
}

func (d *b64decoder) finish() error {
	if len(d.buf)%4 != 0 {
		return invalidB64("length is not a multiple of 4 (missing '=' padding?)")
	}
	return d.flush()
}

// validate checks the parsed fields in docs/api.md's order.
func (p *jsonParser) validate() (*Build, error) {
	get := func(k string) (string, bool) {
		if v := p.fields[k]; v != nil {
			return *v, true
		}
		return "", false
	}
	nonceHex, ok := get("nonce")
	if !ok {
		return nil, errorf(http.StatusBadRequest, "nonce is required")
	}
	nonce, err := parseNonce(nonceHex, 1)
	if err != nil {
		return nil, err
	}
	url, _ := get("repo_url")
	hasURL := url != "" // "" counts as absent, like null
	hasData := p.spool != nil
	if hasURL == hasData {
		return nil, errorf(http.StatusBadRequest, "exactly one of repo_url or source_data is required")
	}
	b := &Build{Nonce: nonce}
	if name, ok := get("source_name"); ok {
		if err := checkText("source_name", name); err != nil {
			return nil, err
		}
		b.Source.ArchiveName = name
	}
	if hasURL {
		ref, _ := get("repo_ref")
		if err := checkText("repo_url", url); err != nil {
			return nil, err
		}
		if err := checkText("repo_ref", ref); err != nil {
			return nil, err
		}
		b.Source.URL, b.Source.Ref = url, ref
		return b, nil
	}
	if p.spool.n == 0 {
		return nil, errorf(http.StatusBadRequest, "source_data is empty")
	}
	if err := p.spool.checkMagic("source_data"); err != nil {
		return nil, err
	}
	if err := p.spool.finish(b); err != nil {
		return nil, err
	}
	return b, nil
}
