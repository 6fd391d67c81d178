// Package source materialises a build's untrusted source: a git repository
// cloned under a strict policy (Clone, CheckRepo) or an uploaded ZIP or gzip
// tarball unpacked under strict rules (Extract). Every refusal is a
// *failure.Error of kind failure.InvalidSource whose message is safe to show
// the client (it never names a server path) and which wraps one of the
// sentinel errors below, so callers can test it with errors.Is.
package source

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/source/gitid"
)

// Sentinel errors of repository checks and clones.
var (
	ErrURL            = errors.New("invalid repository URL")
	ErrTransport      = errors.New("repository transport not allowed")
	ErrPrivateAddress = errors.New("repository host is not a public address")
	ErrResolve        = errors.New("repository host does not resolve")
	ErrRef            = errors.New("invalid repository ref")
	ErrClone          = errors.New("git clone failed")
	ErrRepoTooLarge   = errors.New("repository too large")
	ErrCloneTimeout   = errors.New("clone timed out")
)

// Sentinel errors of archive extraction.
var (
	ErrNotArchive     = errors.New("not a ZIP or gzip tarball")
	ErrCorrupt        = errors.New("corrupt archive")
	ErrUnsafePath     = errors.New("unsafe path in archive")
	ErrUnsafeLink     = errors.New("unsafe link")
	ErrSpecialFile    = errors.New("special file in archive")
	ErrDuplicate      = errors.New("duplicate path in archive")
	ErrTooLarge       = errors.New("archive too large")
	ErrTooManyEntries = errors.New("too many archive entries")
	ErrRatio          = errors.New("archive compression ratio too high")
	ErrUnsupported    = errors.New("unsupported archive feature")
	ErrIdentity       = errors.New("cannot compute the source's git identity")
)

// Tree is a materialised source.
type Tree struct {
	// Dir is the project directory: the single top-level directory if the
	// source has exactly one entry and it is a directory, else the
	// extraction root. For a clone it is the checkout.
	Dir string
	// Top names that single top directory ("" if none; for a clone, the
	// repository name).
	Top string
	// Commit is the checked-out HEAD of a clone ("" for archives).
	Commit string
	// Files counts the regular files materialised (a clone's .git excluded).
	Files int
	// Identity is the source's git identity, computed once here, before
	// anything else touched the tree: for a clone the commit kettle fetched
	// and its tree (from kettle's own clone); for an archive the tree hash
	// of its content and, with a .git, HEAD's commit read by Go code
	// (gitid) — no git runs on uploaded data. URI is left to the caller.
	Identity *gitid.Identity
}

// refuse builds the client-facing refusal: msg is shown to the client, the
// sentinel is kept for errors.Is, and detail (which may name server paths)
// only reaches logs.
func refuse(sentinel error, detail error, format string, args ...any) error {
	err := sentinel
	if detail != nil {
		err = fmt.Errorf("%w: %w", sentinel, detail)
	}
	return &failure.Error{Kind: failure.InvalidSource, Msg: fmt.Sprintf(format, args...), Err: err}
}

// quote renders client-supplied text (entry names, hosts, refs) for a
// message: Go-quoted so control characters are visible, and shortened so a
// hostile 64 KiB name cannot flood a log line.
func quote(s string) string {
	const max = 200
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return fmt.Sprintf("%q", s)
}

// scrub removes server paths from text that came from a tool (git's stderr):
// every occurrence of the given directories is replaced.
func scrub(s string, dirs ...string) string {
	for _, d := range dirs {
		if d == "" || d == "/" {
			continue
		}
		s = strings.ReplaceAll(s, d, "…")
	}
	return s
}
