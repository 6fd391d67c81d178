package verify

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"
)

// WriteTable renders r for people: a header with the build's identity, one
// row per check (✅ or ⛔) and the verdict, then warnings. `kettle verify` and
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
	if r.SourceURI != "" {
		row("Source", r.SourceURI)
	}
	platform := r.Platform
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
		if !c.OK {
			mark = "⛔"
		}
		fmt.Fprintf(&b, "  %s %s\n", mark, c.Name)
		if !c.OK && c.Detail != "" {
			fmt.Fprintf(&b, "       %s\n", c.Detail)
		}
	}
	if r.Passed() {
		b.WriteString("  Verification PASSED\n")
	} else {
		b.WriteString("  Verification FAILED\n")
	}
	for _, wmsg := range r.Warnings {
		fmt.Fprintf(&b, "⚠️  %s\n", wmsg)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
