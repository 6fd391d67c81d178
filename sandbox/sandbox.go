// Package sandbox runs toolchain commands. The build phase runs under
// bubblewrap with no network and limits (Bwrap); the fetch phase runs with
// network but still confined. None runs commands directly and exists only for
// machines where bubblewrap cannot run.
package sandbox

import (
	"context"
	"io"
	"time"

	"github.com/kettle-build/kettle/egress"
)

// Limits bound one command. Zero means "no limit" for that resource.
type Limits struct {
	Memory   int64         // bytes of address space / cgroup memory
	Procs    int           // processes of the sandbox user
	CPUTime  time.Duration // CPU seconds
	FileSize int64         // largest file the command may write
	Disk     int64         // total bytes written under the project directory
	Wall     time.Duration // wall-clock time
}

// Cmd is one command to run.
type Cmd struct {
	Args []string // argv; Args[0] is looked up in PATH of Env
	Dir  string   // working directory: the project directory, writable
	Env  []string // the whole environment; nothing is inherited from the server
	// Output receives stdout and stderr through one pipe, so lines keep
	// their order as the command wrote them.
	Output io.Writer
	// Network is true only in the fetch phase. Under Bwrap the command then
	// gets a network namespace of its own whose only way out is the egress
	// proxy of the runner (WithEgress), which the command's HTTP_PROXY,
	// HTTPS_PROXY, ALL_PROXY (both cases) name; NO_PROXY is empty. None
	// ignores it: commands there have the host's network.
	Network bool
	// Contacted, when set, receives every destination a Network command
	// asked the egress proxy for, allowed or refused (called from the
	// proxy's goroutines, possibly concurrently).
	Contacted func(egress.Contact)
	// Writable lists further directories the command may write (e.g. the
	// job's dependency cache during fetch). Dir is always writable.
	Writable []string
	// ReadOnly lists further directories the command may read that a
	// sandbox would otherwise hide (e.g. the job's dependency cache during
	// the build phase).
	ReadOnly []string
	Limits   Limits
	// Mounts bind host directories at other places in the sandbox (e.g. a
	// job's own Nix store at /nix). Sources must be directories the trusted
	// process created for this job; targets are absolute.
	Mounts []Mount
}

// Mount binds Source (host) at Target (sandbox), read-only unless Writable.
type Mount struct {
	Source, Target string
	Writable       bool
}

// Isolated reports whether r confines the commands it runs: namespaces of
// their own, only the directories a Cmd lists, Cmd.Mounts honoured (Bwrap).
// None runs them on the host as they are; a build under it records that.
func Isolated(r Runner) bool { return r != nil && r.Name() == bwrapName }

// Runner runs commands. Run returns an error wrapping *exec.ExitError (or a
// limit error from this package) when the command fails.
type Runner interface {
	Run(ctx context.Context, c *Cmd) error
	// Name is recorded in provenance: "bwrap" or "none".
	Name() string
}
