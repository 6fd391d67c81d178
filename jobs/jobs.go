// Package jobs is the job model and its store: the state machine, the work
// queue, each job's event log, sources and results, all in NATS JetStream
// (embedded in `kettle serve` or an external cluster). The api package talks
// to it only through Service; workers take jobs through Queue.
package jobs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/kettle-build/kettle/events"
)

// Status of a job.
type Status string

// Job states. queued → running → succeeded | failed.
const (
	StatusQueued    Status = "queued"
	StatusRunning   Status = "running"
	StatusSucceeded Status = "succeeded"
	StatusFailed    Status = "failed"
)

// Sentinel errors of the store; the api maps them to status codes.
var (
	ErrNotFound        = errors.New("job not found")
	ErrQueueFull       = errors.New("queue full")
	ErrSingleBuildUsed = errors.New("this CVM has already accepted a build")
	ErrNoResult        = errors.New("no result")
	ErrNotReady        = errors.New("store not ready")
)

// Source says where a job's code comes from. It is the one source type of
// a submission's whole path: api/request fills it from the POST /build
// body, Submit stores it in the job (GET /build/{id} shows it), and the
// worker builds from it. URL (with Ref) names a git repository; otherwise
// the source is an uploaded archive.
type Source struct {
	URL           string `json:"url,omitempty"` // git URL ("" for an archive)
	Ref           string `json:"ref,omitempty"` // branch, tag or commit; "" = remote HEAD
	ArchiveName   string `json:"archive_name,omitempty"`
	ArchiveSHA256 string `json:"archive_sha256,omitempty"` // hex
	ArchiveSize   int64  `json:"archive_size,omitempty"`
	// ArchivePath is a local file holding the decoded archive: the spool
	// file at the api, the worker's copy of the stored object during
	// Build. Never stored: it names a file of one process.
	ArchivePath string `json:"-"`
}

// Job is the public state of one build (GET /build/{id}).
type Job struct {
	ID           string     `json:"job_id"`
	Status       Status     `json:"status"`
	Position     int        `json:"position"`
	CreatedAt    time.Time  `json:"created_at"`
	StartedAt    *time.Time `json:"started_at"`
	FinishedAt   *time.Time `json:"finished_at"`
	Toolchain    string     `json:"toolchain"`
	Source       Source     `json:"source"`
	Error        string     `json:"error"`
	ErrorType    string     `json:"error_type"`
	ResultSHA256 string     `json:"result_sha256"`
	// Phases are the timed steps of the job (clone … store), in order,
	// recorded when it ends.
	Phases []events.Phase `json:"phases,omitempty"`
	// Fields below are internal bookkeeping, not part of the API reply.
	Nonce      string `json:"nonce,omitempty"` // hex
	ResultName string `json:"result_name,omitempty"`
	ResultSize int64  `json:"result_size,omitempty"`
	// Artifacts are the result's built files (Outcome.Artifacts).
	Artifacts []Artifact `json:"artifacts,omitempty"`
	Worker    string     `json:"worker,omitempty"`
	// Attempts counts the workers that took the job; the API shows it as
	// `attempt`. A job whose worker is lost is taken again until
	// MaxAttempts (fixed at submission; 0: the store's default) is used up.
	Attempts    int `json:"attempts,omitempty"`
	MaxAttempts int `json:"max_attempts,omitempty"`
	// LostWorkers names, in order, the workers that took the job and were
	// lost (killed, partitioned, heartbeat expired).
	LostWorkers []string `json:"lost_workers,omitempty"`
	// ResultObject is the object holding the result: each attempt writes
	// its own, so a late worker presumed dead never overwrites the one
	// the job points at. "" for jobs stored before it existed.
	ResultObject string `json:"result_object,omitempty"`
	// Building is set once the build phase started (informational: a
	// lost worker's job is retried either way).
	Building bool `json:"building,omitempty"`
	// WorkerID names the worker instance (Worker plus a per-process
	// suffix) whose heartbeat proves the job is still being built.
	WorkerID string `json:"worker_id,omitempty"`
}

// Request is a validated submission.
type Request struct {
	Nonce []byte
	// Source is where the code comes from; for an archive, Submit
	// records the digest and size of what Archive holds.
	Source Source
	// Archive is an open uploaded archive spooled to disk (nil for git);
	// the store copies it into its object store during Submit.
	Archive io.Reader
}

// Service is what the HTTP layer needs from the store.
type Service interface {
	// Submit enqueues a job and emits its first `queued` event.
	Submit(ctx context.Context, req Request) (*Job, error)
	Get(ctx context.Context, id string) (*Job, error)
	// Follow subscribes to the job's log: the stored log, then live
	// events, as entries of this process's one shared feed of the job
	// (ErrNotFound for an unknown job). The caller must Close it. Watch
	// (the package function) calls fn for every event from index `from`
	// on, in order, through it: it returns nil right after the `complete`
	// event, ctx.Err() when ctx ends, or fn's error. No event is dropped
	// or repeated.
	Follow(ctx context.Context, id string) (Feed, error)
	// Result opens a succeeded job's result tarball.
	Result(ctx context.Context, id string) (io.ReadCloser, *Job, error)
	// Ready reports whether the store and at least one worker are up.
	Ready(ctx context.Context) error
}

// NonceSize is the nonce length the evidence binds (docs/provenance.md#what-the-evidence-binds); shorter
// nonces are zero-padded to it.
const NonceSize = 16

// NonceNote says, for a job's hex nonce, that the evidence will be bound to
// a zero-padded nonce: "" for a full 16-byte nonce. Such builds are
// accepted (the older multipart API makes the nonce optional), but a
// client must not mistake their evidence for a fresh one.
func NonceNote(nonceHex string) string {
	n := len(nonceHex) / 2
	switch {
	case n >= NonceSize:
		return ""
	case n == 0:
		return "no nonce was sent: the evidence is bound to an all-zero nonce (16 zero bytes), so it does not show that this build is fresh; send 16 random bytes"
	}
	unit := "bytes"
	if n == 1 {
		unit = "byte"
	}
	return fmt.Sprintf("the nonce is %d %s, shorter than 16: the evidence is bound to it zero-padded to 16 bytes; send 16 random bytes", n, unit)
}
