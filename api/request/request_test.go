package request

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

var update = flag.Bool("update", false, "regenerate testdata/hostile/requests")

// requestsDir holds hostile request bodies, shared with the api tests.
var requestsDir = filepath.Join("..", "..", "testdata", "hostile", "requests")

func testZip(t testing.TB) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, _ := zw.Create("proj/main.go")
	w.Write([]byte("package main\n"))
	zw.Close()
	return buf.Bytes()
}

const nonce16 = "00112233445566778899aabbccddeeff"

// wrap64 wraps base64 at 64 columns with the given separator.
func wrap64(s, sep string) string {
	var b strings.Builder
	for len(s) > 64 {
		b.WriteString(s[:64] + sep)
		s = s[64:]
	}
	b.WriteString(s)
	return b.String()
}

// jsonCase is one JSON body and the outcome it must get.
type jsonCase struct {
	name    string
	ct      string
	body    string
	status  int    // 0 = accepted
	msg     string // substring of the message
	hostile bool   // written to the shared corpus
}

func jsonCases(t testing.TB) []jsonCase {
	z := testZip(t)
	b64 := base64.StdEncoding.EncodeToString(z)
	ok := func(extra string) string {
		return `{"nonce":"` + nonce16 + `","source_data":"` + b64 + `"` + extra + `}`
	}
	return []jsonCase{
		{"archive", "application/json", ok(`,"source_name":"proj.zip"`), 0, "", false},
		{"archive charset", "application/json; charset=utf-8", ok(""), 0, "", false},
		{"archive wrapped lf", "application/json", `{"nonce":"` + nonce16 + `","source_data":"` + wrap64(b64, `\n`) + `"}`, 0, "", false},
		{"archive wrapped crlf", "application/json", `{"nonce":"` + nonce16 + `","source_data":"` + wrap64(b64, `\r\n`) + `"}`, 0, "", false},
		{"archive escaped slashes", "application/json", `{"nonce":"` + nonce16 + `","source_data":"` + strings.ReplaceAll(b64, "/", `\/`) + `"}`, 0, "", false},
		{"archive unicode escapes", "application/json", `{"nonce":"` + nonce16 + `","source_data":"\u0055` + b64[1:] + `"}`, 0, "", false},
		{"unknown fields", "application/json", ok(`,"x":{"a":[1,-2.5e3,true,false,null,"s\"\\"],"b":{}},"y":[]`), 0, "", false},
		{"repo", "application/json", `{"repo_url":"https://github.com/a/b","repo_ref":"main","nonce":"` + strings.ToUpper(nonce16) + `"}`, 0, "", false},
		{"null fields", "application/json", `{"repo_url":"https://github.com/a/b","repo_ref":null,"source_data":null,"source_name":null,"nonce":"01"}`, 0, "", false},
		{"short nonce", "application/json", `{"repo_url":"https://github.com/a/b","nonce":"ab"}`, 0, "", false},
		{"escaped key", "application/json", `{"repo_url":"https://github.com/a/b","\u006eonce":"ab"}`, 0, "", false},

		{"wrong content type", "text/plain", ok(""), 415, "Content-Type must be application/json", true},
		{"no content type", "", ok(""), 415, "Content-Type", true},
		{"multipart content type", "multipart/form-data; boundary=x", ok(""), 415, "Content-Type", true},
		{"empty body", "application/json", "", 400, "malformed JSON: empty body", true},
		{"not an object", "application/json", `[1,2]`, 400, "malformed JSON: the body must be a JSON object", true},
		{"truncated", "application/json", `{"nonce":"` + nonce16 + `","source_data":"` + b64[:20], 400, "malformed JSON: unexpected end of body", true},
		{"trailing garbage", "application/json", ok("") + "x", 400, "malformed JSON: data after the JSON object", true},
		{"two objects", "application/json", ok("") + ok(""), 400, "malformed JSON: data after the JSON object", true},
		{"missing colon", "application/json", `{"nonce" "ab"}`, 400, "malformed JSON: expected ':'", true},
		{"bad escape", "application/json", `{"nonce":"a\qb"}`, 400, "malformed JSON: invalid escape", true},
		{"raw newline in string", "application/json", "{\"nonce\":\"" + nonce16 + "\",\"source_data\":\"" + wrap64(b64, "\n") + "\"}", 400, "malformed JSON: control character", true},
		{"bad literal", "application/json", `{"x":nul,"nonce":"ab"}`, 400, "malformed JSON: invalid literal", true},
		{"bad number", "application/json", `{"x":01,"nonce":"ab"}`, 400, "malformed JSON: invalid number", true},
		{"deep nesting", "application/json", `{"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, 400, "malformed JSON: nesting deeper than 64", true},
		{"nonce wrong type", "application/json", `{"nonce":12,"repo_url":"https://github.com/a/b"}`, 400, "nonce must be a string", true},
		{"source_data wrong type", "application/json", `{"nonce":"ab","source_data":["UEsDBA=="]}`, 400, "source_data must be a string", true},
		{"repo_url wrong type", "application/json", `{"nonce":"ab","repo_url":{"u":1}}`, 400, "repo_url must be a string", true},
		{"duplicate source_data", "application/json", `{"nonce":"ab","source_data":"` + b64 + `","source_data":"` + b64 + `"}`, 400, "duplicate field source_data", true},
		{"invalid base64 char", "application/json", `{"nonce":"ab","source_data":"UEsDBA*="}`, 400, "invalid base64 in source_data: illegal character '*' at character 6", true},
		{"invalid base64 urlsafe", "application/json", `{"nonce":"ab","source_data":"UEsDBA_-"}`, 400, "invalid base64 in source_data: URL-safe character", true},
		{"invalid base64 unpadded", "application/json", `{"nonce":"ab","source_data":"UEsDBA"}`, 400, "invalid base64 in source_data: length is not a multiple of 4", true},
		{"invalid base64 data after padding", "application/json", `{"nonce":"ab","source_data":"UEs=DBAA"}`, 400, "invalid base64 in source_data: data after '=' padding", true},
		{"invalid base64 triple padding", "application/json", `{"nonce":"ab","source_data":"UEsDB==="}`, 400, "invalid base64 in source_data: bad padding", true},
		{"invalid base64 space", "application/json", `{"nonce":"ab","source_data":"UEsD BA=="}`, 400, "invalid base64 in source_data: illegal character ' '", true},
		{"too large", "application/json", `{"nonce":"ab","source_data":"` + base64.StdEncoding.EncodeToString(make([]byte, 3000)) + `"}`, 413, "the archive exceeds the maximum upload size of 2048 bytes", true},
		{"body too large", "application/json", `{"nonce":"ab","x":"` + strings.Repeat("a", 2<<20) + `"}`, 413, "request body too large", false},
		{"missing nonce", "application/json", `{"repo_url":"https://github.com/a/b"}`, 400, "nonce is required", true},
		{"null nonce", "application/json", `{"nonce":null,"repo_url":"https://github.com/a/b"}`, 400, "nonce is required", true},
		{"nonce odd", "application/json", `{"nonce":"abc","repo_url":"https://github.com/a/b"}`, 400, "invalid nonce hex: Odd number of digits", true},
		{"nonce not hex", "application/json", `{"nonce":"00g1","repo_url":"https://github.com/a/b"}`, 400, "invalid nonce hex: Invalid character 'g' at position 2", true},
		{"nonce uuid", "application/json", `{"nonce":"00112233-4455-6677-8899-aabbccddeeff","repo_url":"https://github.com/a/b"}`, 400, "invalid nonce hex: Invalid character '-' at position 8", true},
		{"nonce empty", "application/json", `{"nonce":"","repo_url":"https://github.com/a/b"}`, 400, "nonce must be 1-16 bytes", true},
		{"nonce too long", "application/json", `{"nonce":"` + nonce16 + `00","repo_url":"https://github.com/a/b"}`, 400, "nonce must be 1-16 bytes", true},
		{"neither source", "application/json", `{"nonce":"ab"}`, 400, "exactly one of repo_url or source_data is required", true},
		{"both sources", "application/json", `{"nonce":"ab","repo_url":"https://github.com/a/b","source_data":"` + b64 + `"}`, 400, "exactly one of repo_url or source_data is required", true},
		{"empty repo_url", "application/json", `{"nonce":"ab","repo_url":""}`, 400, "exactly one of repo_url or source_data is required", true},
		{"invalid utf8 repo_url", "application/json", "{\"nonce\":\"ab\",\"repo_url\":\"https://github.com/\x84\x84\"}", 400, "repo_url is not valid UTF-8", true},
		{"empty source_data", "application/json", `{"nonce":"ab","source_data":""}`, 400, "source_data is empty", true},
		{"not an archive", "application/json", `{"nonce":"ab","source_data":"` + base64.StdEncoding.EncodeToString([]byte("#!/bin/sh\nrm -rf /\n")) + `"}`, 400, "source_data is neither a ZIP archive (PK) nor a gzip tarball (1f8b)", true},
		{"control char in url", "application/json", `{"nonce":"ab","repo_url":"https://github.com/a\u0000b"}`, 400, "repo_url contains a control character", true},
		{"long repo_url", "application/json", `{"nonce":"ab","repo_url":"https://github.com/` + strings.Repeat("a", 9000) + `"}`, 400, "repo_url is longer than 8192 bytes", true},
	}
}

func TestParseJSON(t *testing.T) {
	cases := jsonCases(t)
	if *update {
		os.MkdirAll(requestsDir, 0o755)
		for _, c := range cases {
			if c.hostile {
				name := strings.ReplaceAll(c.name, " ", "-") + ".json"
				if err := os.WriteFile(filepath.Join(requestsDir, name), []byte(c.body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	z := testZip(t)
	zsum := sha256.Sum256(z)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			spoolDir := t.TempDir()
			// One byte per Read: every token straddles buffer refills.
			for _, body := range []io.Reader{strings.NewReader(c.body), iotest.OneByteReader(strings.NewReader(c.body))} {
				b, err := ParseJSON(context.Background(), c.ct, body, spoolDir, 2048)
				checkOutcome(t, spoolDir, b, err, c.status, c.msg)
				if err == nil && b.Source.ArchivePath != "" {
					if b.Source.ArchiveSize != int64(len(z)) || b.Source.ArchiveSHA256 != hex.EncodeToString(zsum[:]) {
						t.Errorf("archive %d bytes, sha256 %s", b.Source.ArchiveSize, b.Source.ArchiveSHA256)
					}
					got, _ := os.ReadFile(b.Source.ArchivePath)
					if !bytes.Equal(got, z) {
						t.Errorf("spooled archive differs")
					}
					if len(b.Nonce) != 16 || b.Source.ArchiveName != "" && b.Source.ArchiveName != "proj.zip" {
						t.Errorf("build %+v", b)
					}
					b.Remove()
				}
			}
		})
	}
}

// checkOutcome checks an accepted or refused parse, and that a refusal
// leaves nothing in the spool dir.
func checkOutcome(t *testing.T, spoolDir string, b *Build, err error, status int, msg string) {
	t.Helper()
	if status == 0 {
		if err != nil {
			t.Fatalf("refused: %v", err)
		}
		return
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("got %v (%T), want status %d", err, err, status)
	}
	if e.Status != status || !strings.Contains(e.Msg, msg) {
		t.Errorf("got %d %q, want %d %q", e.Status, e.Msg, status, msg)
	}
	if strings.Contains(e.Msg, spoolDir) || strings.ContainsAny(e.Msg, "\n\r") {
		t.Errorf("message %q names a server path or spans lines", e.Msg)
	}
	if b != nil {
		t.Errorf("build returned with an error")
	}
	if ents, _ := os.ReadDir(spoolDir); len(ents) != 0 {
		t.Errorf("spool dir not cleaned: %v", ents)
	}
}

func TestHostileRequestCorpus(t *testing.T) {
	want := map[string]jsonCase{}
	for _, c := range jsonCases(t) {
		if c.hostile {
			want[strings.ReplaceAll(c.name, " ", "-")+".json"] = c
		}
	}
	ents, err := os.ReadDir(requestsDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != len(want) {
		t.Errorf("%d corpus files, %d hostile cases (regenerate with -update)", len(ents), len(want))
	}
	for _, e := range ents {
		c, ok := want[e.Name()]
		if !ok {
			t.Errorf("corpus file %s has no case", e.Name())
			continue
		}
		body, _ := os.ReadFile(filepath.Join(requestsDir, e.Name()))
		spoolDir := t.TempDir()
		b, err := ParseJSON(context.Background(), c.ct, bytes.NewReader(body), spoolDir, 2048)
		checkOutcome(t, spoolDir, b, err, c.status, c.msg)
	}
}

// slowReader yields its data then blocks until ctx ends, like a client that
// stopped sending.
type slowReader struct {
	ctx  context.Context
	data []byte
}

func (s *slowReader) Read(p []byte) (int, error) {
	if len(s.data) > 0 {
		n := copy(p, s.data)
		s.data = s.data[n:]
		return n, nil
	}
	<-s.ctx.Done()
	return 0, s.ctx.Err()
}

func TestAbandonedUpload(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString(make([]byte, 300<<10))
	for _, mp := range []bool{false, true} {
		t.Run(fmt.Sprint("multipart=", mp), func(t *testing.T) {
			spoolDir := t.TempDir()
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			var err error
			if mp {
				head := "--X\r\nContent-Disposition: form-data; name=\"source\"; filename=\"a.zip\"\r\n\r\nPK\x03\x04" + strings.Repeat("z", 300<<10)
				_, err = ParseMultipart(ctx, "multipart/form-data; boundary=X", &slowReader{ctx: ctx, data: []byte(head)}, spoolDir, 1<<30)
			} else {
				head := `{"nonce":"ab","source_data":"` + b64
				_, err = ParseJSON(ctx, "application/json", &slowReader{ctx: ctx, data: []byte(head)}, spoolDir, 1<<30)
			}
			var e *Error
			if !errors.As(err, &e) || e.Status != http.StatusRequestTimeout {
				t.Fatalf("err = %v", err)
			}
			if ents, _ := os.ReadDir(spoolDir); len(ents) != 0 {
				t.Errorf("spool dir not cleaned: %v", ents)
			}
		})
	}
}

func TestClientGone(t *testing.T) {
	spoolDir := t.TempDir()
	body := io.MultiReader(strings.NewReader(`{"nonce":"ab","source_data":"UEsDBAAA`), iotest.ErrReader(io.ErrClosedPipe))
	_, err := ParseJSON(context.Background(), "application/json", body, spoolDir, 1<<20)
	var e *Error
	if !errors.As(err, &e) || e.Status != 400 || e.Msg != "could not read the request body" {
		t.Fatalf("err = %v", err)
	}
	if ents, _ := os.ReadDir(spoolDir); len(ents) != 0 {
		t.Errorf("spool dir not cleaned: %v", ents)
	}
	// http.MaxBytesReader in front of the parser maps to 413.
	rec := http.MaxBytesReader(nil, io.NopCloser(strings.NewReader(`{"nonce":"ab","x":"`+strings.Repeat("a", 100)+`"}`)), 50)
	_, err = ParseJSON(context.Background(), "application/json", rec, spoolDir, 1<<20)
	if !errors.As(err, &e) || e.Status != 413 {
		t.Fatalf("err = %v", err)
	}
}

func multipartBody(t testing.TB, fields [][2]string, file []byte, fileName string) (string, []byte) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, f := range fields {
		mw.WriteField(f[0], f[1])
	}
	if file != nil {
		w, _ := mw.CreateFormFile("source", fileName)
		w.Write(file)
	}
	mw.Close()
	return mw.FormDataContentType(), buf.Bytes()
}

func TestParseMultipart(t *testing.T) {
	z := testZip(t)
	zsum := sha256.Sum256(z)
	type mcase struct {
		name     string
		fields   [][2]string
		file     []byte
		fileName string
		status   int
		msg      string
	}
	cases := []mcase{
		{"zip", nil, z, "proj.zip", 0, ""},
		{"zip with nonce", [][2]string{{"nonce", nonce16}, {"other", "x"}}, z, `C:\Users\me\proj.zip`, 0, ""},
		{"repo", [][2]string{{"repo_url", "https://github.com/a/b"}, {"ref", "main"}}, nil, "", 0, ""},
		{"repo_ref alias", [][2]string{{"repo_url", "https://github.com/a/b"}, {"repo_ref", "main"}, {"nonce", ""}}, nil, "", 0, ""},
		{"neither", [][2]string{{"nonce", "ab"}}, nil, "", 400, "exactly one of repo_url or source is required"},
		{"both", [][2]string{{"repo_url", "https://github.com/a/b"}}, z, "a.zip", 400, "exactly one of repo_url or source is required"},
		{"bad nonce", [][2]string{{"repo_url", "https://github.com/a/b"}, {"nonce", "xyz"}}, nil, "", 400, "invalid nonce hex: Invalid character 'x' at position 0"},
		{"long nonce", [][2]string{{"repo_url", "https://github.com/a/b"}, {"nonce", nonce16 + "00"}}, nil, "", 400, "nonce must be 0-16 bytes"},
		{"dup field", [][2]string{{"repo_url", "https://github.com/a/b"}, {"repo_url", "https://github.com/a/b"}}, nil, "", 400, "duplicate field repo_url"},
		{"too large", nil, make([]byte, 4096), "a.zip", 413, "maximum upload size of 2048 bytes"},
		{"empty file", nil, []byte{}, "a.zip", 400, "source is empty"},
		{"not archive", nil, []byte("hello world"), "a.zip", 400, "source is neither a ZIP archive"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			spoolDir := t.TempDir()
			ct, body := multipartBody(t, c.fields, c.file, c.fileName)
			b, err := ParseMultipart(context.Background(), ct, bytes.NewReader(body), spoolDir, 2048)
			checkOutcome(t, spoolDir, b, err, c.status, c.msg)
			if err != nil {
				return
			}
			if c.file != nil {
				if b.Source.ArchiveSHA256 != hex.EncodeToString(zsum[:]) || b.Source.ArchiveName != "proj.zip" {
					t.Errorf("build %+v", b)
				}
				b.Remove()
			} else if b.Source.URL != "https://github.com/a/b" || b.Source.Ref != "main" {
				t.Errorf("build %+v", b)
			}
		})
	}
	for _, ct := range []string{"application/json", "multipart/form-data", "text/plain; boundary=x"} {
		_, err := ParseMultipart(context.Background(), ct, strings.NewReader(""), t.TempDir(), 2048)
		var e *Error
		if !errors.As(err, &e) || (e.Status != 415 && e.Status != 400) {
			t.Errorf("%s: %v", ct, err)
		}
	}
	// A malformed body.
	spoolDir := t.TempDir()
	_, err := ParseMultipart(context.Background(), "multipart/form-data; boundary=X", strings.NewReader("--X\r\nContent-Disposition: form-data; name=\"source\"\r\n\r\nPK\x03\x04abc"), spoolDir, 2048)
	checkOutcome(t, spoolDir, nil, err, 400, "malformed multipart body")
}
