package source

import (
	"bytes"
	"compress/zlib"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/kettle-build/kettle/source/gitid"
)

// errDecline: copyLocal does not take this repository or ref (a layout,
// object or size it does not read); git clones it as before.
var errDecline = errors.New("local copy declined")

// copyLocal makes dir the depth-1 clone of a repository on this machine's
// disk (file:// or a path, --allow-local-repos) that `git clone --depth=1
// --no-local` would make, without git's transport: a clone there runs six
// processes (clone, sh, upload-pack, pack-objects, index-pack, the
// connectivity check's rev-list), 50-80 ms on a 2-vCPU VM, most of a
// medium build's 3 % budget (docs/benchmarks.md). Go code reads the ref and
// every object of its commit with gitid's rules (no symlink followed,
// sizes bounded, each object hashed against its id: what index-pack
// checks), writes them as loose objects of a new .git with the config,
// refs and shallow file a clone has, and one `git read-tree --reset -u
// HEAD` checks the tree out with git's own path checks and .gitattributes
// conversions. It returns the commit the ref must resolve to ("" for a
// name, as fetch does) and the commit and tree it copied. Anything it does not read — an abbreviated ref,
// alternates, reftable, a gitfile, an object over gitid's limits, a copy
// over budget, a repository owned by another user — is errDecline, with
// dir removed, and the caller runs git instead: the fast path never
// decides what git would refuse. Its one refusal, a tree past maxEntries
// (ErrRepoTooLarge), is the git path's too (checkEntries).
func (g *gitCmd) copyLocal(ctx context.Context, r *remote, ref gitRef, dir string, budget, maxEntries int64) (string, *gitid.Head, error) {
	if r.trans != transFile || ref.kind == refAbbrev || strings.Contains(r.url, "%") {
		return "", nil, errDecline
	}
	gitDir, ok := localGitDir(r.path)
	if !ok {
		return "", nil, errDecline
	}
	want, head, err := g.copyRepo(ctx, gitDir, r.url, ref, dir, budget, maxEntries)
	if err != nil {
		os.RemoveAll(dir)
		if ctx.Err() != nil {
			return "", nil, ctx.Err()
		}
		if errors.Is(err, ErrRepoTooLarge) {
			return "", nil, err // git would check out the same tree
		}
		return "", nil, fmt.Errorf("%w: %w", errDecline, err)
	}
	return want, head, nil
}

// localGitDir finds the repository directory of path as git's enter_repo
// does first ("path/.git", then "path" as a bare repository); any other
// layout, or one owned by another user (git would ask for
// safe.directory), is left to git.
func localGitDir(path string) (string, bool) {
	cand := filepath.Join(path, ".git")
	fi, err := os.Lstat(cand)
	switch {
	case err == nil && !fi.IsDir():
		return "", false // a gitfile or a link
	case err != nil:
		cand = path
		if fi, err = os.Lstat(cand); err != nil || !fi.IsDir() {
			return "", false
		}
		for _, n := range []string{"HEAD", "objects", "refs"} {
			if _, err := os.Lstat(filepath.Join(cand, n)); err != nil {
				return "", false
			}
		}
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != os.Geteuid() {
		return "", false
	}
	if _, err := os.Lstat(filepath.Join(cand, "objects", "info", "alternates")); err == nil {
		return "", false
	}
	return cand, true
}

func (g *gitCmd) copyRepo(ctx context.Context, gitDir, url string, ref gitRef, dir string, budget, maxEntries int64) (string, *gitid.Head, error) {
	src, err := gitid.Open(gitDir)
	if err != nil {
		return "", nil, err
	}
	defer src.Close()
	id, branch, want, err := resolveLocal(src, ref)
	if err != nil {
		return "", nil, err
	}
	head, err := src.Peel(id)
	if err != nil {
		return "", nil, err
	}
	if want != "" && head.Commit != want {
		return "", nil, errors.New("the commit is a tag") // git's checkout of a tag id detaches at it; leave that to git
	}
	// Loose objects take more room than git's pack: past half the limit
	// git decides, with room left for the checkout.
	lw := &looseWriter{objects: filepath.Join(dir, ".git", "objects"), budget: budget / 2}
	if err := os.MkdirAll(lw.objects, 0o755); err != nil {
		return "", nil, err
	}
	kind, commit, err := src.Object(head.Commit)
	if err != nil {
		return "", nil, err
	}
	if err := lw.write(head.Commit, kind, commit); err != nil {
		return "", nil, err
	}
	if _, err := newWalker(ctx, src, maxEntries, lw.write).tree(head.Tree, 0); err != nil {
		return "", nil, err
	}
	if err := writeSkeleton(filepath.Join(dir, ".git"), url, branch, head, gitid.HasParent(commit)); err != nil {
		return "", nil, err
	}
	if _, err := g.run(ctx, dir, "read-tree", "--reset", "-u", "HEAD"); err != nil {
		return "", nil, err
	}
	if dirSize(dir) > budget {
		return "", nil, errors.New("over the size limit on disk")
	}
	return want, head, nil
}

// resolveLocal turns ref into an object id in src, and the branch a
// clone would check out ("" for a detached HEAD: a tag, a full ref or a
// commit, as the git path does).
func resolveLocal(src *gitid.Repo, ref gitRef) (id, branch, want string, err error) {
	switch ref.kind {
	case refDefault:
		hr, err := src.HeadRef()
		if err != nil {
			return "", "", "", err
		}
		if hr == "" {
			id, err = src.Resolve("HEAD")
			return id, "", "", err
		}
		b, ok := strings.CutPrefix(hr, "refs/heads/")
		if !ok {
			return "", "", "", errors.New("HEAD names a ref outside refs/heads")
		}
		id, err = src.Resolve(hr)
		return id, b, "", err
	case refName:
		id, err = src.Resolve("refs/heads/" + ref.name)
		if err == nil {
			return id, ref.name, "", nil
		}
		if !errors.Is(err, gitid.ErrNoHead) {
			return "", "", "", err
		}
		id, err = src.Resolve("refs/tags/" + ref.name)
		return id, "", "", err
	case refFull:
		id, err = src.Resolve(ref.name)
		return id, "", "", err
	case refCommit:
		return ref.name, "", ref.name, nil
	}
	return "", "", "", errors.New("unsupported ref")
}

// looseWriter writes objects into a loose object directory.
type looseWriter struct {
	objects string
	budget  int64
	written int64
	z       *zlib.Writer
	buf     bytes.Buffer
}

func (lw *looseWriter) write(id, kind string, data []byte) error {
	lw.buf.Reset()
	if lw.z == nil {
		lw.z, _ = zlib.NewWriterLevel(&lw.buf, zlib.BestSpeed)
	} else {
		lw.z.Reset(&lw.buf)
	}
	lw.z.Write([]byte(kind + " " + strconv.Itoa(len(data)) + "\x00"))
	lw.z.Write(data)
	if err := lw.z.Close(); err != nil {
		return err
	}
	if lw.written += int64(lw.buf.Len()); lw.written > lw.budget {
		return errors.New("over the size limit")
	}
	sub := filepath.Join(lw.objects, id[:2])
	if err := os.Mkdir(sub, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return os.WriteFile(filepath.Join(sub, id[2:]), lw.buf.Bytes(), 0o444)
}

// writeSkeleton writes what `git clone --depth=1` leaves beside the
// objects: HEAD (the branch, or the commit detached), the branch and its
// remote-tracking ref, the shallow boundary, and a config whose origin is
// url.
func writeSkeleton(gitDir, url, branch string, head *gitid.Head, shallow bool) error {
	for _, d := range []string{"refs/heads", "refs/tags", "objects/info", "objects/pack"} {
		if err := os.MkdirAll(filepath.Join(gitDir, d), 0o755); err != nil {
			return err
		}
	}
	var cfg strings.Builder
	cfg.WriteString("[core]\n")
	if head.Format == gitid.SHA256 {
		cfg.WriteString("\trepositoryformatversion = 1\n")
	} else {
		cfg.WriteString("\trepositoryformatversion = 0\n")
	}
	cfg.WriteString("\tfilemode = true\n\tbare = false\n\tlogallrefupdates = true\n")
	if head.Format == gitid.SHA256 {
		cfg.WriteString("[extensions]\n\tobjectformat = sha256\n")
	}
	fmt.Fprintf(&cfg, "[remote \"origin\"]\n\turl = %s\n", configQuote(url))
	files := map[string]string{}
	if branch != "" {
		fmt.Fprintf(&cfg, "\tfetch = %s\n", configQuote("+refs/heads/"+branch+":refs/remotes/origin/"+branch))
		fmt.Fprintf(&cfg, "[branch %s]\n\tremote = origin\n\tmerge = %s\n", configQuote(branch), configQuote("refs/heads/"+branch))
		files["HEAD"] = "ref: refs/heads/" + branch + "\n"
		files["refs/heads/"+branch] = head.Commit + "\n"
		files["refs/remotes/origin/"+branch] = head.Commit + "\n"
	} else {
		files["HEAD"] = head.Commit + "\n"
	}
	if shallow {
		files["shallow"] = head.Commit + "\n"
	}
	files["config"] = cfg.String()
	for name, content := range files {
		p := filepath.Join(gitDir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// configQuote is a git config value (or subsection name) in double quotes:
// `\` and `"` escaped; newlines never reach here (refs and URLs are
// checked for control characters before).
func configQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}
