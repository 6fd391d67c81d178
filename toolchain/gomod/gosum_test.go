package gomod

import (
	"errors"
	"strings"
	"testing"
)

const uuidSum = `github.com/google/uuid v1.6.0 h1:NIvaJDMOsjHA8n1jAhLSgzrAzy1Hgr+hNrb57e+94F0=
github.com/google/uuid v1.6.0/go.mod h1:TIyPZe4MgqvfeYDBFedMoGGpEw/LqOeaOT+nhxU+yHo=
`

func TestParseSum(t *testing.T) {
	s, err := ParseSum([]byte("\n" + uuidSum +
		"golang.org/x/sys v0.1.0/go.mod h1:oPkhp1MJrh7nUepCBck5+mAzfO9JrbApNNgaTdGDITg=\r\n" +
		"github.com/BurntSushi/toml v1.2.0 h1:Rt8g24XnyGTyglgET/PRUNlrUeu9F5L+7FilkXfZgs0=\n" +
		uuidSum)) // an exact duplicate is harmless
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Zips) != 2 || len(s.GoMods) != 2 {
		t.Fatalf("zips %v gomods %v", s.Zips, s.GoMods)
	}
	deps := s.Dependencies()
	want := []string{
		"pkg:golang/github.com/BurntSushi/toml@v1.2.0",
		"pkg:golang/github.com/google/uuid@v1.6.0",
	}
	for i, d := range deps {
		if d.URI != want[i] {
			t.Errorf("dep %d: uri %q, want %q", i, d.URI, want[i])
		}
	}
	if got := deps[1].Digest["h1"]; got != "NIvaJDMOsjHA8n1jAhLSgzrAzy1Hgr+hNrb57e+94F0=" {
		t.Errorf("digest %q", got)
	}
	if h, ok := s.Lookup("golang.org/x/sys", "v0.1.0", true); !ok || h != "oPkhp1MJrh7nUepCBck5+mAzfO9JrbApNNgaTdGDITg=" {
		t.Errorf("lookup go.mod: %q %v", h, ok)
	}
	if _, ok := s.Lookup("golang.org/x/sys", "v0.1.0", false); ok {
		t.Error("a go.mod-only line must not pin the module content")
	}
}

func TestParseSumEmpty(t *testing.T) {
	s, err := ParseSum(nil)
	if err != nil {
		t.Fatal(err)
	}
	if deps := s.Dependencies(); deps == nil || len(deps) != 0 {
		t.Fatalf("deps %#v, want an empty list (resolvedDependencies must be [])", deps)
	}
}

func TestParseSumErrors(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"fields", "github.com/a/b v1.0.0\n", "go.sum:1: want"},
		{"extra field", "github.com/a/b v1.0.0 h1:NIvaJDMOsjHA8n1jAhLSgzrAzy1Hgr+hNrb57e+94F0= x\n", "have 4 fields"},
		{"algorithm", "github.com/a/b v1.0.0 h2:NIvaJDMOsjHA8n1jAhLSgzrAzy1Hgr+hNrb57e+94F0=\n", "unsupported hash"},
		{"base64", "github.com/a/b v1.0.0 h1:not-base64!\n", "malformed h1"},
		{"length", "github.com/a/b v1.0.0 h1:AAAA\n", "malformed h1"},
		{"path", "/etc/passwd v1.0.0 h1:NIvaJDMOsjHA8n1jAhLSgzrAzy1Hgr+hNrb57e+94F0=\n", "invalid module path"},
		{"dotdot", "a/../b v1.0.0 h1:NIvaJDMOsjHA8n1jAhLSgzrAzy1Hgr+hNrb57e+94F0=\n", "invalid module path"},
		{"query", "a/b?x=1 v1.0.0 h1:NIvaJDMOsjHA8n1jAhLSgzrAzy1Hgr+hNrb57e+94F0=\n", "invalid module path"},
		{"no dot", "a/b v1.0.0 h1:NIvaJDMOsjHA8n1jAhLSgzrAzy1Hgr+hNrb57e+94F0=\n", "invalid module path"},
		{"major", "github.com/a/b/v2 v1.0.0 h1:NIvaJDMOsjHA8n1jAhLSgzrAzy1Hgr+hNrb57e+94F0=\n", "major version"},
		{"non-canonical", "github.com/a/b v1.0 h1:NIvaJDMOsjHA8n1jAhLSgzrAzy1Hgr+hNrb57e+94F0=\n", "not a canonical"},
		{"version", "github.com/a/b 1.0.0 h1:NIvaJDMOsjHA8n1jAhLSgzrAzy1Hgr+hNrb57e+94F0=\n", "not a canonical"},
		{"version chars", "github.com/a/b v1.0.0#x h1:NIvaJDMOsjHA8n1jAhLSgzrAzy1Hgr+hNrb57e+94F0=\n", "not a canonical"},
		{"conflict", uuidSum + "github.com/google/uuid v1.6.0 h1:TIyPZe4MgqvfeYDBFedMoGGpEw/LqOeaOT+nhxU+yHo=\n", "go.sum:3: github.com/google/uuid v1.6.0 is pinned to two different hashes"},
		{"utf8", "github.com/a/b v1.0.0 h1:NIvaJDMOsjHA8n1jAhLSgzrAzy1Hgr+hNrb57e+94F0= \xff\n", "have 4 fields"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSum([]byte(tc.in))
			if err == nil || !errors.Is(err, ErrGoSum) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want ErrGoSum containing %q", err, tc.want)
			}
		})
	}
}

// FuzzGoSum: go.sum comes from the client. No input may panic, and whatever
// parses yields well-formed, sorted package URLs.
func FuzzGoSum(f *testing.F) {
	f.Add([]byte(uuidSum))
	f.Add([]byte("a/b v1.0.0 h1:NIvaJDMOsjHA8n1jAhLSgzrAzy1Hgr+hNrb57e+94F0=\r\n\n"))
	f.Add([]byte("x y z\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSum(data)
		if err != nil {
			if !errors.Is(err, ErrGoSum) {
				t.Fatalf("error not ErrGoSum: %v", err)
			}
			return
		}
		deps := s.Dependencies()
		for i, d := range deps {
			if !strings.HasPrefix(d.URI, "pkg:golang/") || strings.ContainsAny(d.URI, " \n\r\t?#") {
				t.Fatalf("bad uri %q", d.URI)
			}
			if i > 0 && deps[i-1].URI > d.URI {
				t.Fatalf("unsorted: %q > %q", deps[i-1].URI, d.URI)
			}
		}
	})
}
