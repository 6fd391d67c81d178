package source

import (
	"context"
	"errors"
	"fmt"

	"github.com/kettle-build/kettle/source/gitid"
)

// walker reads the objects of a tree from src, each distinct one once,
// and counts the paths the tree expands to: trees may repeat a subtree,
// so a few kilobytes of objects can name millions of files, and git
// would build that whole index in memory before it writes a file. Past
// max entries it stops with ErrRepoTooLarge. visit, when set, gets every
// object read (the commit is the caller's); without it blobs are not read.
type walker struct {
	ctx   context.Context
	src   *gitid.Repo
	max   int64
	count map[string]int64 // tree id → entries below it
	blobs map[string]bool
	visit func(id, kind string, data []byte) error
}

func newWalker(ctx context.Context, src *gitid.Repo, max int64, visit func(id, kind string, data []byte) error) *walker {
	return &walker{ctx: ctx, src: src, max: max, count: map[string]int64{}, blobs: map[string]bool{}, visit: visit}
}

// maxTreeDepth bounds nesting as gitid does for a work tree.
const maxTreeDepth = 2100

// tree returns the number of entries (files, links, gitlinks, directories)
// at and below tree id.
func (w *walker) tree(id string, depth int) (int64, error) {
	if n, ok := w.count[id]; ok {
		return n, nil
	}
	if depth > maxTreeDepth {
		return 0, errors.New("trees nest too deeply")
	}
	data, err := w.read(id, "tree")
	if err != nil {
		return 0, err
	}
	entries, err := gitid.ParseTree(data, w.src.Format())
	if err != nil {
		return 0, err
	}
	var n int64
	for _, e := range entries {
		n++
		switch gitid.Canon(e.Mode) { // as git reads it: 040755 is a tree too
		case gitid.ModeTree:
			sub, err := w.tree(e.ID, depth+1)
			if err != nil {
				return 0, err
			}
			n += sub
		case gitid.ModeFile, gitid.ModeExec, gitid.ModeSymlink:
			if w.visit != nil && !w.blobs[e.ID] {
				if _, err := w.read(e.ID, "blob"); err != nil {
					return 0, err
				}
				w.blobs[e.ID] = true
			}
		case gitid.ModeGitlink:
			// A submodule: a clone checks out an empty directory.
		}
		if n > w.max {
			return 0, refuse(ErrRepoTooLarge, nil, "the repository's tree has more than %d entries", w.max)
		}
	}
	w.count[id] = n
	return n, nil
}

func (w *walker) read(id, kind string) ([]byte, error) {
	if err := w.ctx.Err(); err != nil {
		return nil, err
	}
	k, data, err := w.src.Object(id)
	if err != nil {
		return nil, err
	}
	if k != kind {
		return nil, fmt.Errorf("object %s is a %s, not a %s", id, k, kind)
	}
	if w.visit != nil {
		if err := w.visit(id, kind, data); err != nil {
			return nil, err
		}
	}
	return data, nil
}
