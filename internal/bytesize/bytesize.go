// Package bytesize writes byte counts for people: limits in error
// messages and log summaries.
package bytesize

import "fmt"

// Format is n in the largest binary unit that keeps it ≥ 1 ("64 MiB",
// "1.5 GiB"), or "N bytes" below 1 KiB.
func Format(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d bytes", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	v := float64(n) / float64(div)
	if v == float64(int64(v)) {
		return fmt.Sprintf("%d %ciB", int64(v), "KMGTP"[exp])
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTP"[exp])
}
