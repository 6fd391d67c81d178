package verify

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"
)

// WriteTable renders r for people: a header with the build's identity, one
// row per check (✅ passed, ⚠️ passed but proves less than it says, ⛔
// failed) and the verdict, then warnings. `kettle verify` and
// `kettle remote` print this.
func WriteTable(w io.Writer, r *Report) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Verifying build dir %s\n", filepath.Base(filepath.Clean(r.Dir)))
	row := func(k, v string) {
		if v == "" {
			v = "-"
		}
		fmt.Fprintf(&b, "  %-11s %s\n", k, v)
	}
	row("Build ID", r.BuildID)
	row("Built at", r.BuiltAt)
	row("Built with", r.Toolchain)
	row("Git commit", r.GitCommit)
	if r.GitTree != "" {
		row("Git tree", r.GitTree)
	}
	if r.SourceSHA256 != "" {
		row("Archive", "sha256 "+r.SourceSHA256)
	}
	if r.SourceURI != "" {
		row("Source", r.SourceURI)
	}
	platform := r.Platform
	if platform == PlatformInsecure {
		platform += " (no TEE: nothing is attested)"
	}
	if r.Claims != nil && r.Claims.Generation != "" {
		platform += " (" + r.Claims.Generation + ")"
	}
	row("Platform", platform)
	if r.Nonce != "" {
		row("Nonce", r.Nonce)
	}
	b.WriteString("\nVerification results\n")
	for _, c := range r.Checks {
		mark := "✅"
		switch {
		case !c.OK:
			mark = "⛔"
		case c.Warning:
			mark = "⚠️ "
		}
		fmt.Fprintf(&b, "  %s %s\n", mark, c.Name)
		if (!c.OK || c.Warning || c.Show) && c.Detail != "" {
			fmt.Fprintf(&b, "       %s\n", c.Detail)
		}
	}
	switch {
	case r.Passed() && !r.Attested:
		b.WriteString("  Verification PASSED, but WITHOUT A TEE: no evidence backs this build\n")
	case r.Passed():
		b.WriteString("  Verification PASSED\n")
	default:
		b.WriteString("  Verification FAILED\n")
	}
	for _, wmsg := range r.Warnings {
		fmt.Fprintf(&b, "⚠️  %s\n", wmsg)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
