package cargo

import "testing"

// TestCacheable: which Cargo.lock sources the shared cache serves (network
// registries, after the project's replacements) and which [source] table
// kettle replaces for them.
func TestCacheable(t *testing.T) {
	mirror := &Config{Sources: map[string]*Source{
		"crates-io": {ReplaceWith: "mirror"},
		"mirror":    {Registry: "sparse+http://127.0.0.1:1/index/"},
	}}
	vendored := &Config{Sources: map[string]*Source{
		"crates-io":        {ReplaceWith: "vendored-sources"},
		"vendored-sources": {Directory: "vendor"},
	}}
	local := &Config{Sources: map[string]*Source{
		"crates-io": {ReplaceWith: "local"},
		"local":     {LocalRegistry: "registry"},
	}}
	empty := &Config{Sources: map[string]*Source{}}
	for _, tc := range []struct {
		name             string
		c                *Config
		src              string
		table, effective string
		ok               bool
	}{
		{"crates.io", empty, cratesIOGit, "crates-io", cratesIOGit, true},
		{"crates.io sparse", empty, cratesIOSparse, "crates-io", cratesIOSparse, true},
		{"crates.io through a mirror", mirror, cratesIOGit, "crates-io", "sparse+http://127.0.0.1:1/index/", true},
		{"the mirror's own id", mirror, "sparse+http://127.0.0.1:1/index/", "mirror", "sparse+http://127.0.0.1:1/index/", true},
		{"vendored", vendored, cratesIOGit, "", "", false},
		{"local registry", local, cratesIOGit, "", "", false},
		{"git", empty, "git+https://example.com/x#0123456789012345678901234567890123456789", "", "", false},
		{"alternative registry without a table", empty, "registry+https://alt.example/index", "", "", false},
	} {
		table, effective, ok := tc.c.cacheable(tc.src)
		if table != tc.table || effective != tc.effective || ok != tc.ok {
			t.Errorf("%s: got (%q, %q, %v), want (%q, %q, %v)", tc.name, table, effective, ok, tc.table, tc.effective, tc.ok)
		}
	}
}
