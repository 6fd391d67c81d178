package lazyre

import "testing"

func TestLazy(t *testing.T) {
	r := New(`^a(b+)$`)
	for _, tc := range []struct {
		in   string
		want bool
	}{{"abb", true}, {"a", false}, {"xabb", false}} {
		if got := r.MatchString(tc.in); got != tc.want {
			t.Errorf("MatchString(%q) = %v", tc.in, got)
		}
	}
	if m := r.FindStringSubmatch("abbb"); len(m) != 2 || m[1] != "bbb" {
		t.Errorf("FindStringSubmatch: %q", m)
	}
	h := New(`\{[^}]*\}`)
	if got := h.FindAllString("{a}-{b}", -1); len(got) != 2 {
		t.Errorf("FindAllString: %q", got)
	}
	if got := h.ReplaceAllString("x{a}y", "_"); got != "x_y" {
		t.Errorf("ReplaceAllString: %q", got)
	}
}

// TestInvalidPanicsAtUse: like regexp.MustCompile, but only when used.
func TestInvalidPanicsAtUse(t *testing.T) {
	r := New(`(`)
	defer func() {
		if recover() == nil {
			t.Error("invalid expression did not panic at first use")
		}
	}()
	r.MatchString("x")
}
