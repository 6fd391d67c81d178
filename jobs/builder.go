package jobs

import (
	"context"

	"github.com/kettle-build/kettle/events"
)

// Outcome is a finished build's result.
type Outcome struct {
	// ResultPath is the result tarball (bundle.Write output). The store
	// copies it into its object store and then removes it.
	ResultPath string
	// ResultName is the tarball's top directory: clients save the result
	// as ResultName + ".tar.gz".
	ResultName string
	// Toolchain is the driver name ("cargo", "nix", …); it may be set on
	// an Outcome returned together with an error.
	Toolchain string
	// Artifacts are the result's built files, as its provenance names
	// them, sorted by name: kept in the job so nothing unpacks the
	// tarball again to list them.
	Artifacts []Artifact
}

// MaxListedArtifacts bounds the artifacts a job records (the first by
// name): a hostile build can leave tens of thousands of binaries, and the
// job record must stay far below the store's 8 MiB message size. The
// result tarball and its provenance still hold every one.
const MaxListedArtifacts = 1000

func listed(a []Artifact) []Artifact {
	if len(a) > MaxListedArtifacts {
		a = a[:MaxListedArtifacts]
	}
	return a
}

// Artifact is one built file of a result.
type Artifact struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// Builder builds one job. The store calls Build from RunWorker; sink
// receives the build's events in order and the store appends them to the
// job's log (the store itself writes `queued`, `vm` and the final
// `complete`; a `complete` emitted by Build is ignored). The job's Source
// says what to build; for an archive, Source.ArchivePath is a local copy
// of it that the store removes after Build returns. An error should be
// a *failure.Error whose message is safe to show the client.
type Builder interface {
	Build(ctx context.Context, job *Job, sink events.Sink) (*Outcome, error)
}
