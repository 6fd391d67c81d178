package nix

import (
	"errors"
	"os"
	"strings"
	"testing"
)

const fodB64 = "65AafoUx3/XpH8FUdq852HFgHXK8zU1gNrJTlQ0rFo0="

func TestParseGraphOld(t *testing.T) {
	data, err := os.ReadFile("testdata/show-derivation-2.8.json")
	if err != nil {
		t.Fatal(err)
	}
	g, err := ParseGraph(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Derivations) != 3 || g.TopLevelKeys != 3 {
		t.Fatalf("%d derivations", len(g.Derivations))
	}
	f, err := g.Fetches()
	if err != nil {
		t.Fatal(err)
	}
	if len(f) != 2 {
		t.Fatalf("fetches %+v", f)
	}
	// sorted by name; hex and nix base32 both normalised to base64
	want := []Fetch{
		{Name: "kettle-greeting-src", DrvPath: "/nix/store/7scgdbr8n3n3v2c7vy02z3cy7pvhv9vq-kettle-greeting-src.drv", Algo: "sha256", Hash: fodB64, Mode: "flat", URL: "https://example.com/kettle-greeting-src.txt"},
		{Name: "source", DrvPath: "/nix/store/0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-source.drv", Algo: "sha256", Hash: fodB64, Mode: "nar", URLs: "https://a.example/x.tar.gz https://b.example/x.tar.gz"},
	}
	for i := range want {
		if f[i] != want[i] {
			t.Errorf("fetch %d:\n got %+v\nwant %+v", i, f[i], want[i])
		}
	}
	if got := f[0].URI(); got != "pkg:nix-fetch/kettle-greeting-src?hash=sha256:"+fodB64 {
		t.Errorf("uri %s", got)
	}
	if got := f[0].Leaf(); got != "fetch:kettle-greeting-src:sha256:"+fodB64 {
		t.Errorf("leaf %s", got)
	}
	d := f[0].Dependency()
	if d.Digest["sha256"] != fodB64 || d.Annotations.DrvPath != want[0].DrvPath || d.Name != "kettle-greeting-src" {
		t.Errorf("dependency %+v", d)
	}
}

func TestParseGraphNew(t *testing.T) {
	data, err := os.ReadFile("testdata/derivation-show-new.json")
	if err != nil {
		t.Fatal(err)
	}
	g, err := ParseGraph(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Derivations) != 2 || g.TopLevelKeys != 2 {
		t.Fatalf("%+v", g)
	}
	f, err := g.Fetches()
	if err != nil || len(f) != 1 {
		t.Fatalf("%+v %v", f, err)
	}
	if f[0].Hash != fodB64 || f[0].Algo != "sha256" || f[0].Mode != "nar" || f[0].DrvPath != "/nix/store/wjsx1al6aaaaaaaaaaaaaaaaaaaaaaaa-source.drv" {
		t.Errorf("%+v", f[0])
	}
}

func TestNormaliseHashErrors(t *testing.T) {
	for _, o := range []Output{
		{HashAlgo: "sha256", Hash: "zz"},
		{HashAlgo: "sha999", Hash: "00"},
		{Hash: "sha256-notbase64!"},
		{Hash: "sha256-" + "AAAA"},
		{HashAlgo: "sha512", Hash: "sha256-" + fodB64},
		{HashAlgo: "sha256", Hash: strings.Repeat("e", 52)}, // 'e' is not a nix32 digit
	} {
		if _, _, _, err := normaliseHash(o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
	g, _ := ParseGraph([]byte(`{"/nix/store/x-a.drv":{"outputs":{"out":{"hash":"bad"}}}}`))
	if _, err := g.Fetches(); !errors.Is(err, ErrDerivation) {
		t.Errorf("err %v", err)
	}
	for _, bad := range []string{"", "[]", `{"derivations": 3}`, `{"/nix/store/x.drv": []}`} {
		if _, err := ParseGraph([]byte(bad)); !errors.Is(err, ErrDerivation) {
			t.Errorf("ParseGraph(%q): %v", bad, err)
		}
	}
}

func TestFlakeInputs(t *testing.T) {
	lock := `{
  "nodes": {
    "greeting": {"locked": {"narHash": "sha256-qPDvMBmNC/Ca3wuNsL3ZDvRufBInwqLO+JdH/Br8yJs=", "path": "./greeting", "type": "path"}},
    "nixpkgs": {"locked": {"narHash": "sha256-AAAA", "type": "github"}},
    "nolock": {},
    "root": {"inputs": {"nixpkgs": "nixpkgs", "greeting": "greeting", "follows": ["nixpkgs"], "nolock": "nolock", "missing": "gone"}}
  },
  "root": "root",
  "version": 7
}`
	got, err := FlakeInputs([]byte(lock))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != "greeting" || got[1].Name != "nixpkgs" || got[1].NarHash != "sha256-AAAA" {
		t.Fatalf("%+v", got)
	}
	for _, bad := range []string{"", "{", `{"nodes": {}}`, `{"nodes": 1}`} {
		if _, err := FlakeInputs([]byte(bad)); !errors.Is(err, ErrDerivation) {
			t.Errorf("FlakeInputs(%q): %v", bad, err)
		}
	}
	if got, err := FlakeInputs([]byte(`{"nodes":{"root":{}},"root":"root"}`)); err != nil || len(got) != 0 {
		t.Errorf("no inputs: %+v %v", got, err)
	}
}

func TestHasDerivationShow(t *testing.T) {
	for v, want := range map[string]bool{"nix (Nix) 2.8.0": false, "nix (Nix) 2.15.0": true, "nix (Nix) 2.24.9": true, "nix (Nix) 3.0": true, "?": true} {
		if hasDerivationShow(v) != want {
			t.Errorf("%s: %v", v, !want)
		}
	}
}

func FuzzParseGraph(f *testing.F) {
	for _, p := range []string{"testdata/show-derivation-2.8.json", "testdata/derivation-show-new.json"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := ParseGraph(data)
		if err != nil {
			return
		}
		g.Fetches()
	})
}

func FuzzFlakeInputs(f *testing.F) {
	f.Add([]byte(`{"nodes":{"a":{"locked":{"narHash":"sha256-x"}},"root":{"inputs":{"a":"a","b":["a"]}}},"root":"root"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		FlakeInputs(data)
	})
}
