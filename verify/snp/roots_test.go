package snp

import (
	"testing"
)

// TestDefaultRootsSigned: the embedded roots, which DefaultRoots takes
// without checking signatures, pass ParseRoots' checks (every ARK
// self-signed, every intermediate signed by an ARK) and give the same sets.
func TestDefaultRootsSigned(t *testing.T) {
	var all []byte
	ents, err := rootFS.ReadDir("roots")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := rootFS.ReadFile("roots/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		all = append(append(all, b...), '\n')
	}
	checked, err := ParseRoots(all)
	if err != nil {
		t.Fatalf("embedded roots fail the signature checks: %v", err)
	}
	d := DefaultRoots()
	if len(d.ARKs) != len(checked.ARKs) || len(d.Intermediates) != len(checked.Intermediates) {
		t.Fatalf("DefaultRoots: %d ARKs, %d intermediates; checked: %d, %d",
			len(d.ARKs), len(d.Intermediates), len(checked.ARKs), len(checked.Intermediates))
	}
	for i := range d.ARKs {
		if !d.ARKs[i].Equal(checked.ARKs[i]) {
			t.Errorf("ARK %d differs", i)
		}
	}
	for i := range d.Intermediates {
		if !d.Intermediates[i].Equal(checked.Intermediates[i]) {
			t.Errorf("intermediate %d differs", i)
		}
	}
	if len(d.ARKs) < 3 {
		t.Errorf("only %d ARKs embedded (Milan, Genoa, Turin expected)", len(d.ARKs))
	}
}
