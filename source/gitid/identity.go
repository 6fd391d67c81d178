// Package gitid computes a source tree's git identity — the commit HEAD
// names, the tree id of the content, whether they differ — with Go code
// only. kettle never runs git on submission data outside the sandbox: git
// honours repository configuration (filters, fsmonitor, hooks), and a
// hostile .git turned `git status` into root command execution on the host.
// Everything here reads through descriptors opened with O_NOFOLLOW, hashes
// links as links, bounds every size and verifies every object's hash.
package gitid

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Identity is what provenance records about a build's source.
type Identity struct {
	// URI names where the source came from ("" when unknown, e.g. an
	// upload).
	URI string
	// Commit is the git commit that was built: HEAD of the checkout when
	// the content equals its tree, else "" (no commit describes it).
	Commit string
	// Tree is the git tree id of the content that was built (.git and the
	// output directory excluded); for a clean checkout HEAD^{tree}.
	Tree string
	// Dirty reports content that differs from HEAD's tree; HeadCommit then
	// names HEAD (for the warning), and Commit is empty.
	Dirty      bool
	HeadCommit string
	// Tag names a tag of the remote at Commit (RemoteTag), for a shallow
	// clone that has none itself; "" when unknown.
	Tag string
}

// Options tune Identify.
type Options struct {
	// Exclude lists project-relative paths left out of the tree hash (the
	// output directory of `kettle build`).
	Exclude []string
	// Origin sets URI from .git/config's remote.origin.url (a local
	// checkout's own claim; never for uploads, whose config is the
	// client's unverified word).
	Origin bool
}

// ErrGitFile marks a .git that is not a directory: a worktree or
// submodule's "gitdir:" redirect, or a link. kettle never follows it.
var ErrGitFile = errors.New(".git is not a directory (a worktree or submodule gitdir redirect, or a link); kettle reads only a .git directory of the project itself")

// Identify computes the identity of the project directory dir: the tree
// id of its content and, when dir/.git is a directory, HEAD's commit and
// whether the content matches that commit's tree. Errors wrap one of this
// package's sentinels (ErrNoHead, ErrCorrupt, …, ErrTreeGit,
// ErrTreeSpecial, ErrGitFile), whose text is safe to show a client.
func Identify(ctx context.Context, dir string, o Options) (*Identity, error) {
	var st unix.Stat_t
	err := unix.Lstat(filepath.Join(dir, ".git"), &st)
	switch {
	case errors.Is(err, unix.ENOENT):
		tree, err := TreeHash(ctx, dir, SHA1, o.Exclude...)
		if err != nil {
			return nil, err
		}
		return &Identity{Tree: tree}, nil
	case err != nil:
		return nil, fmt.Errorf("stat .git: %w", err)
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return nil, ErrGitFile
	}
	head, err := ReadHead(filepath.Join(dir, ".git"))
	if err != nil {
		return nil, err
	}
	tree, err := TreeHash(ctx, dir, head.Format, o.Exclude...)
	if err != nil {
		return nil, err
	}
	id := &Identity{Commit: head.Commit, Tree: tree, HeadCommit: head.Commit}
	if o.Origin {
		id.URI = OriginURL(filepath.Join(dir, ".git"))
	}
	if tree != head.Tree {
		id.Dirty, id.Commit = true, ""
	}
	return id, nil
}

// Reason is the client-safe text of an Identify error: the sentinel it
// wraps, or "" when it wraps none (an I/O failure of the server's own).
func Reason(err error) string {
	// Tree errors are "<project-relative path>: <sentinel>": the client's
	// own names, no server path.
	if errors.Is(err, ErrTreeGit) || errors.Is(err, ErrTreeSpecial) || errors.Is(err, ErrCollision) {
		return err.Error()
	}
	for _, s := range []error{ErrNoHead, ErrBadRef, ErrRefLoop, ErrNoObject, ErrCorrupt, ErrTooLarge, ErrDeltaDepth,
		ErrLink, ErrNotCommit, ErrUnsupported, ErrGitFile} {
		if errors.Is(err, s) {
			return s.Error()
		}
	}
	if errors.Is(err, errLink) || errors.Is(err, errNotRegular) {
		return ErrLink.Error()
	}
	return ""
}
