package pipeline

import (
	"context"
	"path/filepath"
	"strings"

	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/source/gitid"
)

// sourceIdentity is the source's identity: the one computed where the
// source was materialised (Options.Source), or for RunDir (identify)
// SourceIdentity of o.Dir. SourceURI, when set, names the source.
func sourceIdentity(ctx context.Context, o Options, identify bool) (*gitid.Identity, error) {
	id := o.Source
	if id == nil {
		if !identify {
			return nil, failure.New(failure.InternalError, "no source identity")
		}
		var err error
		if id, err = SourceIdentity(ctx, o.Dir, o.OutDir, o.SourceURI == ""); err != nil {
			return nil, err
		}
	}
	cp := *id
	if o.SourceURI != "" {
		cp.URI = o.SourceURI
	}
	return &cp, nil
}

// SourceIdentity computes the identity of a local project directory with
// Go code only (gitid.Identify; git never runs on the project): the git
// tree of its content without .git and outDir (default dir/kettle-build),
// HEAD's commit when dir/.git is a directory, dirty when they differ; with
// origin, the URI is the checkout's remote.origin.url. Errors are
// *failure.Error.
func SourceIdentity(ctx context.Context, dir, outDir string, origin bool) (*gitid.Identity, error) {
	// dir is the caller's own path (a job directory, or the DIR the user
	// named): its symlinks are resolved here; inside it none is followed.
	if d, err := filepath.EvalSymlinks(dir); err == nil {
		dir = d
	}
	if outDir == "" {
		outDir = filepath.Join(dir, OutDirName)
	} else if d, err := filepath.EvalSymlinks(filepath.Dir(outDir)); err == nil {
		outDir = filepath.Join(d, filepath.Base(outDir))
	}
	var exclude []string
	absDir, err1 := filepath.Abs(dir)
	absOut, err2 := filepath.Abs(outDir)
	if rel, err := filepath.Rel(absDir, absOut); err1 == nil && err2 == nil && err == nil && rel != "." && !strings.HasPrefix(rel, "..") {
		exclude = append(exclude, filepath.ToSlash(rel))
	}
	id, err := gitid.Identify(ctx, dir, gitid.Options{Exclude: exclude, Origin: origin})
	if err != nil {
		if ctx.Err() != nil {
			return nil, classify(ctx, ctx.Err())
		}
		reason := gitid.Reason(err)
		if reason == "" {
			return nil, failure.Wrap(failure.InternalError, err, "cannot hash the source tree")
		}
		return nil, failure.Wrap(failure.InvalidSource, err, "cannot compute the source's git identity: "+reason)
	}
	return id, nil
}
