package bytesize

import (
	"fmt"
	"strconv"
	"strings"
)

// maxSize bounds a parsed size so that sums and multiples of a few limits
// stay far from int64 overflow.
const maxSize = 1 << 62

// units are the accepted suffixes (case-insensitive), all binary: operators
// write "4G", "4GB" and "4GiB" meaning the same thing.
var units = map[string]int64{
	"": 1, "b": 1,
	"k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10,
	"m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
	"g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
	"t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40,
	"p": 1 << 50, "pb": 1 << 50, "pib": 1 << 50,
}

// Parse reads a byte count written by an operator: "1048576", "512MiB",
// "4G", "10KB", "1.5GiB", "3 k". Units are binary and case-insensitive;
// the number may be fractional but not negative, and the result is at
// most 2^62.
func Parse(v string) (int64, error) {
	s := strings.TrimSpace(v)
	i := len(s)
	for i > 0 && (s[i-1]|0x20 >= 'a' && s[i-1]|0x20 <= 'z') {
		i--
	}
	num, unit := strings.TrimSpace(s[:i]), strings.ToLower(s[i:])
	mult, ok := units[unit]
	if !ok {
		return 0, fmt.Errorf("invalid size unit in %q (want B, K/KB/KiB, M/MB/MiB, G/GB/GiB, T/TB/TiB or P/PB/PiB)", v)
	}
	if num == "" {
		return 0, fmt.Errorf("invalid size %q: no number", v)
	}
	// Whole numbers are read exactly; a float would round above 2^53.
	if n, err := strconv.ParseInt(num, 10, 64); err == nil {
		if n < 0 {
			return 0, fmt.Errorf("invalid size %q: negative", v)
		}
		if n > maxSize/mult {
			return 0, fmt.Errorf("size %q too large (at most 4 EiB)", v)
		}
		return n * mult, nil
	}
	f, err := strconv.ParseFloat(num, 64)
	switch {
	case err != nil && !strings.Contains(err.Error(), "range"), f != f: // NaN
		return 0, fmt.Errorf("invalid size %q", v)
	case f < 0:
		return 0, fmt.Errorf("invalid size %q: negative", v)
	case err != nil || f*float64(mult) > maxSize:
		return 0, fmt.Errorf("size %q too large (at most 4 EiB)", v)
	}
	return int64(f * float64(mult)), nil
}
