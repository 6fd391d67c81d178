package request

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParseJSON checks ParseJSON against encoding/json: whatever it
// accepts is valid JSON whose fields decode to the same values (source_data
// to the same bytes), and whatever it calls malformed is invalid JSON
// (within its documented extra limits). Refusals are one-line messages
// without server paths and leave nothing in the spool dir.
func FuzzParseJSON(f *testing.F) {
	for _, c := range jsonCases(f) {
		if len(c.body) < 64<<10 { // big seeds only slow the mutator down
			f.Add(c.body)
		}
	}
	if ents, err := os.ReadDir(requestsDir); err == nil {
		for _, e := range ents {
			if b, err := os.ReadFile(filepath.Join(requestsDir, e.Name())); err == nil && len(b) < 64<<10 {
				f.Add(string(b))
			}
		}
	}
	spoolDir := f.TempDir() // one per fuzz process; every exec must leave it empty
	f.Fuzz(func(t *testing.T, body string) {
		b, err := ParseJSON(context.Background(), "application/json", strings.NewReader(body), spoolDir, 1<<20)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is not an *Error", err)
			}
			switch e.Status {
			case 400, 413:
			default:
				t.Fatalf("status %d for %q", e.Status, e.Msg)
			}
			if strings.Contains(e.Msg, spoolDir) || strings.ContainsAny(e.Msg, "\r\n") {
				t.Fatalf("bad message %q", e.Msg)
			}
			if ents, _ := os.ReadDir(spoolDir); len(ents) != 0 {
				t.Fatalf("spool dir not cleaned")
			}
			if strings.HasPrefix(e.Msg, "malformed JSON") && json.Valid([]byte(body)) &&
				!strings.Contains(e.Msg, "nesting") && !strings.Contains(e.Msg, "must be a JSON object") && !strings.Contains(e.Msg, "too long") && !strings.Contains(e.Msg, "longer than") {
				t.Fatalf("valid JSON called malformed: %q", e.Msg)
			}
			return
		}
		defer b.Remove()
		if !json.Valid([]byte(body)) {
			t.Fatalf("accepted invalid JSON")
		}
		var ref struct {
			Nonce      *string `json:"nonce"`
			RepoURL    *string `json:"repo_url"`
			RepoRef    *string `json:"repo_ref"`
			SourceData *string `json:"source_data"`
			SourceName *string `json:"source_name"`
		}
		if err := json.Unmarshal([]byte(body), &ref); err != nil {
			t.Fatalf("encoding/json refuses what ParseJSON accepted: %v", err)
		}
		if ref.Nonce == nil || !strings.EqualFold(hex.EncodeToString(b.Nonce), *ref.Nonce) {
			t.Fatalf("nonce %x vs %v", b.Nonce, ref.Nonce)
		}
		if ref.SourceData != nil {
			want, err := base64.StdEncoding.DecodeString(*ref.SourceData)
			if err != nil {
				t.Fatalf("accepted base64 that encoding/base64 refuses: %v", err)
			}
			got, _ := os.ReadFile(b.Source.ArchivePath)
			sum := sha256.Sum256(want)
			if !bytes.Equal(got, want) || b.Source.ArchiveSHA256 != hex.EncodeToString(sum[:]) || b.Source.ArchiveSize != int64(len(want)) {
				t.Fatalf("spooled archive differs")
			}
			if ref.RepoURL != nil && *ref.RepoURL != "" || b.Source.URL != "" {
				t.Fatalf("both sources")
			}
		} else if ref.RepoURL == nil || *ref.RepoURL != b.Source.URL || b.Source.URL == "" {
			t.Fatalf("repo_url %q vs %v", b.Source.URL, ref.RepoURL)
		}
	})
}

// FuzzParseMultipart checks that ParseMultipart never panics, classifies
// every refusal and cleans up after it.
func FuzzParseMultipart(f *testing.F) {
	z := testZip(f)
	for _, fields := range [][][2]string{nil, {{"nonce", nonce16}}, {{"repo_url", "https://github.com/a/b"}, {"ref", "main"}}} {
		ct, body := multipartBody(f, fields, z, "proj.zip")
		f.Add(ct, body)
		ct, body = multipartBody(f, fields, nil, "")
		f.Add(ct, body)
	}
	spoolDir := f.TempDir()
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		b, err := ParseMultipart(context.Background(), ct, bytes.NewReader(body), spoolDir, 1<<20)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Status < 400 || e.Status > 415 {
				t.Fatalf("error %v", err)
			}
			if strings.Contains(e.Msg, spoolDir) || strings.ContainsAny(e.Msg, "\r\n") {
				t.Fatalf("bad message %q", e.Msg)
			}
			if ents, _ := os.ReadDir(spoolDir); len(ents) != 0 {
				t.Fatalf("spool dir not cleaned")
			}
			return
		}
		defer b.Remove()
		if (b.Source.URL == "") == (b.Source.ArchivePath == "") || len(b.Nonce) > 16 {
			t.Fatalf("build %+v", b)
		}
	})
}
