package bytesize

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		err  string // substring of the error; "" = success
	}{
		{"0", 0, ""},
		{"1048576", 1 << 20, ""},
		{"512MiB", 512 << 20, ""},
		{"4G", 4 << 30, ""},
		{"10KB", 10 << 10, ""},
		{"10kb", 10 << 10, ""},
		{"64m", 64 << 20, ""},
		{"1.5GiB", 3 << 29, ""},
		{" 3 K ", 3 << 10, ""},
		{"2 TiB", 2 << 40, ""},
		{"7B", 7, ""},
		{"1P", 1 << 50, ""},
		{"1e3", 1000, ""},
		{"4611686018427387904", 1 << 62, ""},
		{"4611686018427387905", 0, "too large"},
		{"4096P", 1 << 62, ""},
		{"4097P", 0, "too large"},
		{"1e30", 0, "too large"},
		{"99999999999999999999", 0, "too large"},
		{"", 0, "no number"},
		{"B", 0, "no number"},
		{"GiB", 0, "no number"},
		{"-1", 0, "negative"},
		{"-1.5K", 0, "negative"},
		{"NaN", 0, "unit"},
		{"Inf", 0, "unit"},
		{"5 parsecs", 0, "unit"},
		{"1XB", 0, "unit"},
		{"1.2.3M", 0, "invalid size"},
		{"0x10", 0, "invalid size"},
	} {
		got, err := Parse(tc.in)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("Parse(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("Parse(%q) = %d, %v; want an error with %q", tc.in, got, err, tc.err)
		}
	}
}

// Parse reads back what Format would write as a flag default, minus the
// space and "bytes".
func TestParseFormat(t *testing.T) {
	for _, n := range []int64{0, 1, 1023, 1024, 64 << 20, 3 << 30, 1 << 50} {
		s := strings.TrimSuffix(strings.ReplaceAll(Format(n), " ", ""), "bytes")
		if got, err := Parse(s); err != nil || got != n {
			t.Errorf("Parse(%q) = %d, %v; want %d", s, got, err, n)
		}
	}
}

// FuzzParse: operator-supplied sizes never panic, never go negative or over
// 2^62, and a success is reproducible.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"0", "1", "512MiB", "1.5GiB", "4G", "10kb", "-1", "1e30", "NaN", "Inf", " 3 K ", "B", "0x1p4", "1_000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Parse(s)
		if err != nil {
			return
		}
		if n < 0 || n > maxSize {
			t.Fatalf("Parse(%q) = %d", s, n)
		}
		if m, err := Parse(s); err != nil || m != n {
			t.Fatalf("Parse(%q) not reproducible: %d, %v", s, m, err)
		}
	})
}
