package request

import (
	"context"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"path"
	"strings"
)

const maxParts = 64

// ParseMultipart parses the older multipart/form-data API: a `source` file
// part (a ZIP, or a gzip tarball) or `repo_url` with an optional `ref`
// (`repo_ref` is accepted too), and an optional `nonce` (hex, 0-16 bytes;
// absent or empty means no nonce). The file part is streamed to spoolDir,
// hashed on the way and bounded by maxUpload; its file name becomes
// SourceName unless a `source_name` field is given. Unknown fields are
// skipped; a known field given twice is refused.
func ParseMultipart(ctx context.Context, contentType string, body io.Reader, spoolDir string, maxUpload int64) (b *Build, err error) {
	mt, params, perr := mime.ParseMediaType(contentType)
	if perr != nil || mt != "multipart/form-data" {
		return nil, errorf(http.StatusUnsupportedMediaType, "Content-Type must be multipart/form-data")
	}
	boundary := params["boundary"]
	if boundary == "" {
		return nil, errorf(http.StatusBadRequest, "multipart body without a boundary")
	}
	limit := maxUpload + 1<<20
	lb := &limitedBody{ctx: ctx, r: body, left: limit, limit: limit}
	mr := multipart.NewReader(lb, boundary)
	var sp *spool
	defer func() {
		if err != nil {
			sp.abort()
		}
	}()
	fail := func(err error) error {
		var e *Error
		switch {
		case errors.As(err, &e):
			return e
		case errors.Is(err, errBodyTooLarge):
			return errorf(http.StatusRequestEntityTooLarge, "request body too large (the archive may be at most %d bytes)", maxUpload)
		case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
			return errorf(http.StatusBadRequest, "malformed multipart body: unexpected end of body")
		}
		if ctx.Err() == nil && strings.HasPrefix(err.Error(), "multipart:") {
			return &Error{Status: http.StatusBadRequest, Msg: "malformed multipart body: " + strings.TrimPrefix(err.Error(), "multipart: "), Err: err}
		}
		return readErr(ctx, err)
	}
	fields := map[string]string{}
	fileName := ""
	for n := 0; ; n++ {
		part, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fail(err)
		}
		if n >= maxParts {
			return nil, errorf(http.StatusBadRequest, "more than %d form fields", maxParts)
		}
		name := part.FormName()
		switch name {
		case "source":
			if sp != nil {
				return nil, errorf(http.StatusBadRequest, "duplicate field source")
			}
			if sp, err = newSpool(spoolDir, maxUpload); err != nil {
				return nil, err
			}
			if _, err := io.CopyBuffer(sp, part, make([]byte, spoolBuf)); err != nil {
				return nil, fail(err)
			}
			fileName = part.FileName()
		case "repo_url", "ref", "repo_ref", "nonce", "source_name":
			key := name
			if key == "repo_ref" {
				key = "ref"
			}
			if _, dup := fields[key]; dup {
				return nil, errorf(http.StatusBadRequest, "duplicate field %s", name)
			}
			v, err := io.ReadAll(io.LimitReader(part, maxFieldLen+1))
			if err != nil {
				return nil, fail(err)
			}
			if len(v) > maxFieldLen {
				return nil, errorf(http.StatusBadRequest, "%s is longer than %d bytes", name, maxFieldLen)
			}
			fields[key] = strings.TrimSpace(string(v))
		default:
			if _, err := io.Copy(io.Discard, part); err != nil {
				return nil, fail(err)
			}
		}
	}
	b = &Build{}
	if v := fields["nonce"]; v != "" {
		if b.Nonce, err = parseNonce(v, 0); err != nil {
			return nil, err
		}
	}
	url := fields["repo_url"]
	if (url != "") == (sp != nil) {
		return nil, errorf(http.StatusBadRequest, "exactly one of repo_url or source is required")
	}
	name, hasName := fields["source_name"]
	if !hasName && fileName != "" {
		// Only the base name: browsers may send a full client path.
		name = path.Base(strings.ReplaceAll(fileName, "\\", "/"))
	}
	if err := checkText("source_name", name); err != nil {
		return nil, err
	}
	b.Source.ArchiveName = name
	if url != "" {
		if err := checkText("repo_url", url); err != nil {
			return nil, err
		}
		if err := checkText("ref", fields["ref"]); err != nil {
			return nil, err
		}
		b.Source.URL, b.Source.Ref = url, fields["ref"]
		return b, nil
	}
	if sp.n == 0 {
		return nil, errorf(http.StatusBadRequest, "source is empty")
	}
	if err := sp.checkMagic("source"); err != nil {
		return nil, err
	}
	if err := sp.finish(b); err != nil {
		return nil, err
	}
	return b, nil
}
