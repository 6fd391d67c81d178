package pipeline

import (
	"fmt"
	"testing"

	"github.com/kettle-build/kettle/egress"
)

// TestHostSet: destinations are deduplicated and sorted, a refusal sticks,
// and a fetch asking for endless destinations cannot grow the list past
// maxFetchHosts.
func TestHostSet(t *testing.T) {
	var h hostSet
	h.add(egress.Contact{Addr: "b.example:443"})
	h.add(egress.Contact{Addr: "a.example:443"})
	h.add(egress.Contact{Addr: "b.example:443", Refused: true})
	h.add(egress.Contact{Addr: "b.example:443"})
	got := h.list()
	if len(got) != 2 || got[0].Address != "a.example:443" || got[0].Refused || got[1].Address != "b.example:443" || !got[1].Refused {
		t.Fatalf("list = %+v", got)
	}
	if s := fetchHostsLine(got); s != "a.example:443, b.example:443 (refused)" {
		t.Errorf("line = %q", s)
	}
	for i := 0; i < 3*maxFetchHosts; i++ {
		h.add(egress.Contact{Addr: fmt.Sprintf("h%d.example:443", i), Refused: i%2 == 0})
	}
	if n := len(h.list()); n != maxFetchHosts {
		t.Errorf("%d hosts kept, want %d", n, maxFetchHosts)
	}
}
