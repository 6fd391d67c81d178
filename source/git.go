package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kettle-build/kettle/egress"
	"github.com/kettle-build/kettle/failure"
	"github.com/kettle-build/kettle/source/gitid"
)

// Clone fetches url at ref into a new directory under workDir: depth 1, the
// remote HEAD when ref is "", a branch or tag by name, or a 40/64-hex commit
// exactly (`git fetch --depth 1 origin <sha>`). It runs git with no system
// or global config, no hooks, no submodules, no credential helpers or
// prompts, only the transports p allows (GIT_ALLOW_PROTOCOL), "--" before
// every URL, inside p's time and size limits; http(s) goes through an
// egress.Session that checks each connection's resolved address (no DNS
// rebinding, redirects included) and counts the bytes received. A checkout whose symlinks leave the tree is refused.
// Tree.Dir is <workDir>/<new dir>/<repository name>.
func Clone(ctx context.Context, rawURL, ref, workDir string, p Policy) (*Tree, error) {
	gr, err := parseRef(ref)
	if err != nil {
		return nil, err
	}
	r, err := parseRemote(rawURL, p)
	if err != nil {
		return nil, err
	}
	x, err := p.proxy()
	if err != nil {
		return nil, fmt.Errorf("egress proxy: %w", err)
	}
	fetchURL := rawURL
	if r.host != "" {
		addrs, err := checkHost(ctx, x, r, p)
		if err != nil {
			return nil, err
		}
		if r.trans == transGit {
			// git:// has no proxy: connect to the address just checked.
			u, _ := url.Parse(rawURL)
			u.Host = net.JoinHostPort(addrs[0].String(), r.port)
			fetchURL = u.String()
		}
	}

	root, err := os.MkdirTemp(workDir, "clone-")
	if err != nil {
		return nil, fmt.Errorf("create clone directory: %w", err)
	}
	t, err := clone(ctx, r, fetchURL, gr, root, p, x)
	if err != nil {
		os.RemoveAll(root)
		return nil, err
	}
	return t, nil
}

func clone(parent context.Context, r *remote, fetchURL string, ref gitRef, root string, p Policy, x *egress.Proxy) (*Tree, error) {
	ctx, cancel := context.WithTimeout(parent, p.cloneTimeout())
	defer cancel()
	name := repoName(r.path)
	dir := filepath.Join(root, name)
	home := filepath.Join(root, ".home")
	if err := os.Mkdir(home, 0o700); err != nil {
		return nil, err
	}
	defer os.RemoveAll(home)

	g := &gitCmd{root: root, home: home, local: p.AllowLocal, maxEntries: p.maxRepoEntries()}
	if r.trans == transHTTP || r.trans == transHTTPS {
		// Every connection git makes (redirects included) goes through an
		// egress session: checked, pinned to the checked address, and
		// counted towards the size limit.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("start egress proxy: %w", err)
		}
		g.proxy = x.Serve(ln, nil, egress.Budget(p.maxRepoBytes()))
		defer g.proxy.Close()
		g.proxyAddr = ln.Addr().String()
		g.config = append(g.config, "http.proxy=http://"+g.proxyAddr)
		if p.caFile != "" {
			g.config = append(g.config, "http.sslCAInfo="+p.caFile)
		}
	}

	// The size limit covers what lands on disk, whatever the transport.
	var tooLarge atomic.Bool
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		// Walking a large checkout costs; poll often at first, then every 2 s.
		for polls := 1; ; polls++ {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(min(polls, 8)) * 250 * time.Millisecond):
				if dirSize(root) > p.maxRepoBytes() {
					tooLarge.Store(true)
					cancel()
					return
				}
			}
		}
	}()
	// A repository on this disk is copied in Go when copyLocal reads it;
	// else, and for every other transport, git clones it. Both read the
	// commit and its tree from kettle's own clone before the checkout.
	want, h, err := g.copyLocal(ctx, r, ref, dir, p.maxRepoBytes(), g.maxEntries)
	if errors.Is(err, errDecline) {
		want, h, err = g.fetch(ctx, fetchURL, ref, dir)
	}
	var head, tree string
	switch {
	case err == nil && h != nil:
		head, tree = h.Commit, h.Tree
	case err == nil:
		// A commit gitid declined: git's answer. (The content is not
		// re-hashed: git checked the commit out itself.)
		head, tree, err = g.readHead(ctx, dir)
	}
	var tag string
	if err == nil && hasConfig(dir) {
		// kettle.toml may stamp {version}: the clone has no tags, so ask
		// the remote which tag names the commit. Best effort: without an
		// answer the version is the commit.
		if out, lerr := g.run(ctx, dir, "ls-remote", "--tags", "--", "origin"); lerr == nil {
			tag = gitid.RemoteTag(out, head)
		}
	}
	if err == nil && dirSize(root) > p.maxRepoBytes() {
		tooLarge.Store(true)
	}
	cancel()
	<-watchDone

	switch {
	case parent.Err() != nil:
		return nil, fmt.Errorf("clone: %w", parent.Err())
	case g.proxy != nil && g.proxy.Err() != nil:
		return nil, proxyRefusal(g.proxy.Err(), p)
	case g.proxy != nil && g.proxy.Exceeded(), tooLarge.Load():
		return nil, refuse(ErrRepoTooLarge, err, "the repository is larger than %d bytes", p.maxRepoBytes())
	case ctx.Err() == context.DeadlineExceeded && err != nil:
		return nil, refuse(ErrCloneTimeout, err, "git clone timed out after %v", p.cloneTimeout())
	case err != nil:
		return nil, err
	}
	if want != "" && !strings.EqualFold(head, want) {
		return nil, refuse(ErrClone, nil, "the fetched commit %s is not %s", head, want)
	}
	if fetchURL != r.url {
		// Record the URL the client gave, not the pinned address.
		if _, err := g.run(parent, dir, "config", "remote.origin.url", r.url); err != nil {
			return nil, err
		}
	}
	files, err := checkCheckout(dir)
	if err != nil {
		return nil, err
	}
	return &Tree{Dir: dir, Top: name, Commit: head, Files: files, Identity: &gitid.Identity{Commit: head, Tree: tree, HeadCommit: head, Tag: tag}}, nil
}

// readHead returns HEAD's commit and tree in kettle's own clone dir.
// gitid.ReadHead reads them in Go: every git process costs 5-10 ms here,
// and the pack it reads was indexed (every object hashed) by git's
// index-pack. Where the Go reader declines a clone git made (a ref storage
// or object it does not read, an object beyond its size limits), one git
// rev-parse answers as before.
func (g *gitCmd) readHead(ctx context.Context, dir string) (commit, tree string, err error) {
	if h, err := gitid.ReadHead(filepath.Join(dir, ".git")); err == nil {
		return h.Commit, h.Tree, nil
	}
	return g.revParseHead(ctx, dir)
}

// revParseHead asks git for HEAD^{commit} and HEAD^{tree} in one process;
// "--" makes both revisions (never paths).
func (g *gitCmd) revParseHead(ctx context.Context, dir string) (commit, tree string, err error) {
	out, err := g.run(ctx, dir, "rev-parse", "HEAD^{commit}", "HEAD^{tree}", "--")
	if err != nil {
		return "", "", err
	}
	f := strings.Fields(out)
	if len(f) != 3 || f[2] != "--" || !isObjectID(f[0]) || len(f[1]) != len(f[0]) || !isObjectID(f[1]) {
		return "", "", refuse(ErrClone, fmt.Errorf("git rev-parse: unexpected output %q", out), "git clone failed: cannot read the cloned commit")
	}
	return strings.ToLower(f[0]), strings.ToLower(f[1]), nil
}

// isObjectID reports a SHA-1 or SHA-256 object id in hex.
func isObjectID(s string) bool {
	return (len(s) == 40 || len(s) == 64) && isHex(s)
}

// hasConfig reports a kettle.toml at the checkout's root (Lstat: whatever
// it is, buildcfg.Load judges it later).
func hasConfig(dir string) bool {
	_, err := os.Lstat(filepath.Join(dir, "kettle.toml"))
	return err == nil
}

// repoName is the checkout's directory name: the URL's last path element
// without ".git", as `git clone` names it, restricted to a safe alphabet.
func repoName(p string) string {
	p = strings.TrimRight(p, "/")
	p = strings.TrimSuffix(path.Base(p), ".git")
	b := []byte(p)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '_'
		}
	}
	s := strings.TrimLeft(string(b), ".")
	if s == "" || len(s) > 100 {
		return "repo"
	}
	return s
}

// gitCmd runs git with a hermetic, hardened environment.
type gitCmd struct {
	root, home string
	local      bool
	maxEntries int64 // of a checkout (checkEntries)
	config     []string
	proxy      *egress.Session // nil for git:// and local transports
	proxyAddr  string
}

// baseConfig are the -c settings of every git command of a clone.
var baseConfig = []string{
	"core.hooksPath=/dev/null",
	"core.fsmonitor=false",
	"core.symlinks=true",
	"credential.helper=",
	"protocol.allow=never",
	"protocol.ext.allow=never",
	"protocol.fd.allow=never",
	"submodule.recurse=false",
	"fetch.recurseSubmodules=false",
	"http.followRedirects=initial", // git's default, pinned: only the first request may redirect
	"advice.detachedHead=false",
	"init.defaultBranch=main",
	"gc.auto=0",
	"maintenance.auto=false",
	// The clone is scratch, removed with its job: no fsync of its pack
	// (durability only; git ≥ 2.36, ignored before).
	"core.fsync=none",
	// A bare repository committed inside the checkout is never
	// discovered as the repository git runs in (its config could run
	// commands); kettle's own clone has a .git.
	"safe.bareRepository=explicit",
}

func (g *gitCmd) env() []string {
	protocols := "https"
	if g.local {
		protocols = "https:http:git:file"
	}
	pathEnv := os.Getenv("PATH")
	if pathEnv == "" {
		pathEnv = "/usr/local/bin:/usr/bin:/bin"
	}
	return []string{
		"PATH=" + pathEnv,
		// An empty home: no ~/.netrc (curl would send its credentials),
		// ~/.gitconfig or XDG config.
		"HOME=" + g.home,
		"XDG_CONFIG_HOME=" + g.home,
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_TERMINAL_PROMPT=0",
		"GIT_ALLOW_PROTOCOL=" + protocols,
		"GIT_PROTOCOL_FROM_USER=0",
		"GIT_CEILING_DIRECTORIES=" + g.root,
		"LC_ALL=C",
		"LANG=C",
	}
}

func (g *gitCmd) args(args ...string) []string {
	var a []string
	for _, c := range baseConfig {
		a = append(a, "-c", c)
	}
	protos := []string{"https"}
	if g.local {
		protos = append(protos, "http", "git", "file")
	}
	for _, p := range protos {
		a = append(a, "-c", "protocol."+p+".allow=always")
	}
	for _, c := range g.config {
		a = append(a, "-c", c)
	}
	return append(a, args...)
}

// run runs git in dir and returns its stdout; a failure is an ErrClone
// refusal whose message is git's last error lines with server paths
// removed.
func (g *gitCmd) run(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", g.args(args...)...)
	cmd.Dir = dir
	cmd.Env = g.env()
	var stdout, stderr capped
	stdout.max, stderr.max = 1<<20, 64<<10
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// git-remote-https and other helpers are children: kill the group.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		msg := g.summarise(stderr.String())
		if msg == "" {
			msg = "git " + args[0] + " failed"
		}
		return "", refuse(ErrClone, fmt.Errorf("git %s: %w: %s", args[0], err, stderr.String()), "git clone failed: %s", msg)
	}
	return stdout.String(), nil
}

// summarise keeps git's last meaningful stderr lines, without server paths.
func (g *gitCmd) summarise(s string) string {
	dirs := []string{g.root, g.home}
	if g.proxyAddr != "" {
		dirs = append(dirs, g.proxyAddr)
	}
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "Cloning into") || strings.HasPrefix(l, "hint:") {
			continue
		}
		keep = append(keep, l)
	}
	if len(keep) > 3 {
		keep = keep[len(keep)-3:]
	}
	out := scrub(strings.Join(keep, "; "), dirs...)
	if len(out) > 400 {
		out = out[:400] + "…"
	}
	return out
}

// fetch checks ref out into dir and returns the commit that must be
// checked out ("" when ref names a branch, tag or the remote HEAD) and the
// commit and tree checked out, as checkEntries read them (nil where gitid
// declined the commit).
func (g *gitCmd) fetch(ctx context.Context, fetchURL string, ref gitRef, dir string) (string, *gitid.Head, error) {
	if ref.kind == refAbbrev {
		resolved, err := g.resolveAbbrev(ctx, fetchURL, ref.name)
		if err != nil {
			return "", nil, err
		}
		ref = resolved
	}
	switch ref.kind {
	case refDefault, refName:
		args := []string{"clone", "--depth=1", "--no-tags", "--single-branch", "--no-local", "--template=", "--quiet", "--no-checkout"}
		if ref.kind == refName {
			args = append(args, "--branch", ref.name)
		}
		if _, err := g.run(ctx, g.root, append(args, "--", fetchURL, dir)...); err != nil {
			return "", nil, err
		}
		h, err := g.checkEntries(ctx, dir, "HEAD")
		if err != nil {
			return "", nil, err
		}
		// What clone's own checkout does: a one-way merge into a new index.
		_, err = g.run(ctx, dir, "read-tree", "--reset", "-u", "HEAD")
		return "", h, err
	case refFull:
		// clone --branch takes names only; a full ref is fetched as a
		// refspec (refs/heads/… or refs/tags/…: parseRef checked it).
		if err := g.initRemote(ctx, fetchURL, "sha1", dir); err != nil {
			return "", nil, err
		}
		if _, err := g.run(ctx, dir, "fetch", "--depth=1", "--no-tags", "--no-recurse-submodules", "--quiet", "--", "origin", ref.name); err != nil {
			return "", nil, err
		}
		h, err := g.checkEntries(ctx, dir, "FETCH_HEAD")
		if err != nil {
			return "", nil, err
		}
		_, err = g.run(ctx, dir, "checkout", "--quiet", "--detach", "FETCH_HEAD", "--")
		return "", h, err
	}
	format := "sha1"
	if len(ref.name) == 64 {
		format = "sha256"
	}
	if err := g.initRemote(ctx, fetchURL, format, dir); err != nil {
		return "", nil, err
	}
	if _, err := g.run(ctx, dir, "fetch", "--depth=1", "--no-tags", "--no-recurse-submodules", "--quiet", "--", "origin", ref.name); err != nil {
		return "", nil, err
	}
	h, err := g.checkEntries(ctx, dir, ref.name)
	if err != nil {
		return "", nil, err
	}
	_, err = g.run(ctx, dir, "checkout", "--quiet", "--detach", ref.name, "--")
	return ref.name, h, err
}

// checkEntries counts the entries of rev's tree in the fetched
// repository dir (gitid, trees only, modes read as git reads them) and
// refuses one past g.maxEntries before git checks it out: a tree
// repeating a subtree names millions of files in a few kilobytes, and git
// builds their whole index in memory first. rev is HEAD, FETCH_HEAD or a
// commit id; its tree comes from gitid, or from git where gitid declines
// the commit (over 16 MiB). A tree gitid cannot read is refused: git
// wrote and indexed this pack itself, so only a hostile tree gets there.
// It returns the commit and tree it read, nil where gitid declined the
// commit.
func (g *gitCmd) checkEntries(ctx context.Context, dir, rev string) (*gitid.Head, error) {
	gitDir := filepath.Join(dir, ".git")
	src, err := gitid.Open(gitDir)
	if err != nil {
		return nil, refuse(ErrClone, err, "git clone failed: the fetched repository cannot be read")
	}
	defer src.Close()
	h, err := peelRev(src, gitDir, rev)
	tree := ""
	if err == nil {
		tree = h.Tree
	} else if out, err := g.run(ctx, dir, "rev-parse", "--verify", "--end-of-options", rev+"^{tree}"); err == nil {
		h, tree = nil, strings.TrimSpace(out)
	} else {
		return nil, err
	}
	_, err = newWalker(ctx, src, g.maxEntries, nil).tree(tree, 0)
	switch {
	case err == nil, ctx.Err() != nil:
		return h, ctx.Err()
	case errors.Is(err, ErrRepoTooLarge):
		return nil, err
	case errors.Is(err, gitid.ErrTooLarge), errors.Is(err, gitid.ErrDeltaDepth):
		return nil, refuse(ErrRepoTooLarge, err, "the repository has a tree object over 16 MiB or too costly to read")
	}
	reason := gitid.Reason(err)
	if reason == "" {
		reason = "unreadable"
	}
	return nil, refuse(ErrClone, err, "git clone failed: the fetched tree cannot be read (%s)", reason)
}

// peelRev is the commit rev (HEAD, FETCH_HEAD or an id) names in gitDir.
func peelRev(src *gitid.Repo, gitDir, rev string) (*gitid.Head, error) {
	id := rev
	switch rev {
	case "HEAD":
		var err error
		if id, err = src.Resolve("HEAD"); err != nil {
			return nil, err
		}
	case "FETCH_HEAD":
		b, err := os.ReadFile(filepath.Join(gitDir, "FETCH_HEAD"))
		if err != nil {
			return nil, err
		}
		id, _, _ = strings.Cut(strings.TrimSpace(string(b)), "\t")
	}
	return src.Peel(id)
}

// initRemote makes dir an empty repository whose origin is fetchURL.
func (g *gitCmd) initRemote(ctx context.Context, fetchURL, format, dir string) error {
	if _, err := g.run(ctx, g.root, "init", "--quiet", "--template=", "--object-format="+format, "--", dir); err != nil {
		return err
	}
	_, err := g.run(ctx, dir, "config", "remote.origin.url", fetchURL)
	return err
}

// resolveAbbrev turns 7 to 39 hex digits into what they name on the
// remote: a branch or tag of that name, or the one commit they abbreviate.
// The remote's ref tips are asked first (ls-remote); failing those, its
// commit history (commits only, no trees or files: --filter=tree:0, inside
// the clone's size and time limits). Two candidates are refused as
// ambiguous, never guessed between.
func (g *gitCmd) resolveAbbrev(ctx context.Context, fetchURL, prefix string) (gitRef, error) {
	out, err := g.run(ctx, g.root, "ls-remote", "--", fetchURL)
	if err != nil {
		return gitRef{}, err
	}
	adv := gitid.ParseAdvertisement(out)
	named := adv.Named(prefix)
	commits := adv.CommitsWithPrefix(prefix)
	switch {
	case named != "" && (len(commits) > 1 || len(commits) == 1 && commits[0] != named):
		return gitRef{}, refuse(ErrRef, nil, "repo_ref %s is ambiguous: a branch or tag has that name and it also abbreviates another commit; give refs/heads/%s, refs/tags/%s or the full commit", quote(prefix), prefix, prefix)
	case named != "":
		return gitRef{kind: refName, name: prefix}, nil
	case len(commits) == 1:
		return gitRef{kind: refCommit, name: commits[0]}, nil
	case len(commits) > 1:
		return gitRef{}, refuse(ErrRef, nil, "repo_ref %s is ambiguous: it abbreviates %d commits of the remote; give more digits", quote(prefix), len(commits))
	}
	// Not a tip: look through the history, commits only.
	hist := filepath.Join(g.root, ".resolve")
	defer os.RemoveAll(hist)
	if err := g.initRemote(ctx, fetchURL, "sha1", hist); err != nil {
		return gitRef{}, err
	}
	if _, err := g.run(ctx, hist, "fetch", "--filter=tree:0", "--no-tags", "--no-recurse-submodules", "--quiet", "--",
		"origin", "+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"); err != nil {
		return gitRef{}, err
	}
	out, _ = g.run(ctx, hist, "rev-parse", "--disambiguate="+prefix)
	var found []string
	for _, sha := range strings.Fields(out) {
		if typ, err := g.run(ctx, hist, "cat-file", "-t", "--", sha); err == nil && strings.TrimSpace(typ) == "commit" {
			found = append(found, strings.ToLower(sha))
		}
	}
	switch len(found) {
	case 0:
		return gitRef{}, refuse(ErrRef, nil, "repo_ref %s names no branch, tag or commit of the remote", quote(prefix))
	case 1:
		return gitRef{kind: refCommit, name: found[0]}, nil
	}
	return gitRef{}, refuse(ErrRef, nil, "repo_ref %s is ambiguous: it abbreviates %d commits of the remote; give more digits", quote(prefix), len(found))
}

// capped is a bytes.Buffer that keeps at most max bytes.
type capped struct {
	bytes.Buffer
	max int
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.Len(); room > 0 {
		c.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// dirSize sums the sizes of the files under dir.
func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// checkCheckout refuses a checkout with a symlink leaving it (the host
// would follow it when hashing inputs) and counts its regular files,
// .git excluded.
func checkCheckout(dir string) (int, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return 0, err
	}
	defer root.Close()
	files := 0
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == ".git" && d.IsDir() {
			return filepath.SkipDir
		}
		switch {
		case d.Type().IsRegular():
			files++
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			rel = filepath.ToSlash(rel)
			if t := path.Join(path.Dir(rel), target); strings.HasPrefix(target, "/") || t == ".." || strings.HasPrefix(t, "../") {
				return refuse(ErrUnsafeLink, nil, "repository symlink %s points outside the source tree", quote(rel))
			}
			if _, err := root.Stat(rel); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
				return refuse(ErrUnsafeLink, err, "repository symlink %s resolves outside the source tree or loops", quote(rel))
			}
		}
		return nil
	})
	var fe *failure.Error
	if err != nil && !errors.As(err, &fe) {
		err = fmt.Errorf("walk checkout: %w", err)
	}
	return files, err
}
