package provenance

import (
	"bytes"
	"os"
	"testing"
)

func TestRoundTripKex(t *testing.T) {
	want, err := os.ReadFile("../../shared/fixtures/kettle-v1/kex/provenance.json")
	if err != nil {
		t.Skip(err)
	}
	s, err := Parse(want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("round trip differs:\n%s", got)
	}
}
