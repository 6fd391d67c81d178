package toolchain

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"

	"github.com/kettle-build/kettle/failure"
)

// Lock is a project's lockfile as the trusted process read it: once, by
// ReadLock, before any driver step. The driver parses these bytes, the
// provenance records their hash, build-config/ holds them and a fetch
// copies them, so what is recorded is what was checked and fetched; no
// step reads the lockfile again.
type Lock struct {
	Name   string // project-relative name (Driver.Lockfile)
	Data   []byte // nil: the project has none (an OptionalLockfile driver)
	SHA256 string // hex sha256 of Data; "" when Data is nil
}

// NewLock is the Lock of data, hashed.
func NewLock(name string, data []byte) *Lock {
	l := &Lock{Name: name, Data: data}
	if data != nil {
		sum := sha256.Sum256(data)
		l.SHA256 = hex.EncodeToString(sum[:])
	}
	return l
}

// ReadLock reads d's lockfile in dir through the project root
// (ReadProjectFile: a regular file, no path or symlink leaving the project,
// no FIFO, at most MaxProjectFile bytes). A missing lockfile is an empty
// Lock for a driver that builds without one and an error otherwise.
func ReadLock(dir string, d Driver) (*Lock, error) {
	name := d.Lockfile()
	data, err := ReadProjectFile(dir, name)
	switch {
	case err == nil:
		return NewLock(name, data), nil
	case LockfileOptional(d) && errors.Is(err, fs.ErrNotExist):
		return &Lock{Name: name}, nil
	}
	return nil, failure.Wrap(failure.UnsupportedToolchain, err, fmt.Sprintf("cannot read %s", name))
}

// Plan is ReadLock and then d.Inputs: the whole plan step, for a caller
// that holds no Lock yet (a driver's Fetch or Build called without Inputs,
// tests). The pipeline reads the lock in its detect phase and calls Inputs
// itself.
func Plan(ctx context.Context, d Driver, w *Workspace) (*Inputs, error) {
	lock, err := ReadLock(w.Dir, d)
	if err != nil {
		return nil, err
	}
	return d.Inputs(ctx, w, lock)
}
