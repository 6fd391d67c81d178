package gitid

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// Repo reads the refs and objects of one repository directory (a .git
// directory or a bare repository) under ReadHead's rules: no symlink
// followed below it, every size bounded, every object hashed and compared
// with its id; alternates, commondir, grafts and replace refs never read.
type Repo struct {
	r     *repo
	fixed bool // r.f is known
}

// Open opens the repository directory gitDir for reading.
func Open(gitDir string) (*Repo, error) {
	d, err := openDir(gitDir)
	if err != nil {
		return nil, classifyFS(err)
	}
	return &Repo{r: &repo{d: d}}, nil
}

// Close releases the descriptors of the repository and its packs.
func (r *Repo) Close() error {
	r.r.close()
	return r.r.d.Close()
}

// HeadRef returns the ref HEAD names ("refs/heads/main"), or "" when HEAD
// holds an object id (detached).
func (r *Repo) HeadRef() (string, error) {
	data, err := r.r.d.readFile("HEAD", maxRefFile)
	if err != nil {
		return "", classifyFS(err)
	}
	s := strings.TrimRight(string(data), "\n")
	t, ok := strings.CutPrefix(s, "ref:")
	if !ok {
		return "", nil
	}
	t = strings.TrimLeft(t, " \t")
	if strings.ContainsAny(t, "\n\r\x00") || !validRefName(t) {
		return "", ErrBadRef
	}
	return t, nil
}

// Resolve follows name — "HEAD" or a ref under refs/ — through symbolic
// refs, loose refs and packed-refs to an object id (hex). ErrNoHead means
// the ref does not exist.
func (r *Repo) Resolve(name string) (string, error) {
	if name != "HEAD" && !validRefName(name) {
		return "", ErrBadRef
	}
	id, err := r.r.resolveRef(name, 0)
	if err != nil {
		return "", err
	}
	if err := r.setFormat(id); err != nil {
		return "", err
	}
	return id, nil
}

// setFormat fixes the repository's object format from the first id seen;
// every later id must have the same length.
func (r *Repo) setFormat(id string) error {
	f, ok := formatOf(id)
	if !ok {
		return ErrBadRef
	}
	if r.fixed && f != r.r.f {
		return fmt.Errorf("%w: object ids of two lengths", ErrCorrupt)
	}
	r.r.f, r.fixed = f, true
	return nil
}

// Format is the object format of the ids resolved so far.
func (r *Repo) Format() Format { return r.r.f }

// Object returns object id (hex) — its kind ("commit", "tree", "blob",
// "tag") and content — after checking that the content hashes to id.
func (r *Repo) Object(id string) (kind string, data []byte, err error) {
	if err := r.setFormat(id); err != nil {
		return "", nil, err
	}
	raw, _ := hex.DecodeString(id)
	r.r.budget = maxInflateTotal
	typ, data, err := r.r.object(raw, 0)
	if err != nil {
		return "", nil, err
	}
	return typeName(typ), data, nil
}

// Peel follows id through annotated tags to a commit and returns the
// commit and its tree.
func (r *Repo) Peel(id string) (*Head, error) {
	for peel := 0; ; peel++ {
		if peel > maxPeel {
			return nil, ErrRefLoop
		}
		kind, data, err := r.Object(id)
		if err != nil {
			return nil, err
		}
		switch kind {
		case "commit":
			tree, ok := headerID(data, "tree ", r.r.f)
			if !ok {
				return nil, fmt.Errorf("%w: commit without a tree line", ErrCorrupt)
			}
			return &Head{Commit: id, Tree: tree, Format: r.r.f}, nil
		case "tag":
			next, ok := headerID(data, "object ", r.r.f)
			if !ok {
				return nil, fmt.Errorf("%w: tag without an object line", ErrCorrupt)
			}
			id = next
		default:
			return nil, ErrNotCommit
		}
	}
}

// HasParent reports whether commit content names a parent (a depth-1
// copy of it is then shallow).
func HasParent(commit []byte) bool {
	hdr, _, _ := bytes.Cut(commit, []byte("\n\n"))
	for _, l := range bytes.Split(hdr, []byte("\n")) {
		if bytes.HasPrefix(l, []byte("parent ")) {
			return true
		}
	}
	return false
}

// TreeEntry is one entry of a tree object.
type TreeEntry struct {
	Mode uint32 // the octal mode as stored (Canon: how git checks it out)
	Name string
	ID   string // hex
}

// Tree modes.
const (
	ModeTree    = 0o40000
	ModeFile    = 0o100644
	ModeExec    = 0o100755
	ModeSymlink = 0o120000
	ModeGitlink = 0o160000
)

// Canon is the mode git checks an entry of mode out as (git's
// canon_mode): by its type bits a directory, a file (executable when the
// owner may run it), a symlink, and anything else a gitlink.
func Canon(mode uint32) uint32 {
	switch mode & 0o170000 {
	case 0o100000:
		if mode&0o100 != 0 {
			return ModeExec
		}
		return ModeFile
	case 0o120000:
		return ModeSymlink
	case 0o040000:
		return ModeTree
	}
	return ModeGitlink
}

// ParseTree reads the entries of a tree object of format f:
// "<octal mode> <name>\0<raw id>" each. A malformed entry is ErrCorrupt;
// names are returned as stored (git checks them when it checks out).
func ParseTree(data []byte, f Format) ([]TreeEntry, error) {
	var out []TreeEntry
	n := f.size()
	for len(data) > 0 {
		// git reads any run of octal digits (old gits zero-padded
		// "040000"), so this does too: a stricter parser would read a tree
		// differently from the git that checks it out.
		sp := bytes.IndexByte(data, ' ')
		if sp <= 0 || sp > 16 {
			return nil, fmt.Errorf("%w: tree entry mode", ErrCorrupt)
		}
		mode, err := strconv.ParseUint(string(data[:sp]), 8, 32)
		if err != nil || mode > 0o177777 {
			return nil, fmt.Errorf("%w: tree entry mode", ErrCorrupt)
		}
		rest := data[sp+1:]
		nul := bytes.IndexByte(rest, 0)
		if nul <= 0 || len(rest) < nul+1+n {
			return nil, fmt.Errorf("%w: tree entry name", ErrCorrupt)
		}
		name := string(rest[:nul])
		if name == "." || name == ".." || strings.Contains(name, "/") {
			return nil, fmt.Errorf("%w: tree entry name", ErrCorrupt)
		}
		out = append(out, TreeEntry{Mode: uint32(mode), Name: name, ID: hex.EncodeToString(rest[nul+1 : nul+1+n])})
		data = rest[nul+1+n:]
	}
	return out, nil
}
