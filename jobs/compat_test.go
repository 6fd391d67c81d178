package jobs

import (
	"encoding/json"
	"reflect"
	"testing"
)

// Job records written by earlier versions stay readable, and a record
// written now has the same shape: jobs persist in JetStream across
// upgrades. The records below are what the version before the one
// submission type (jobs.Source, carried from api/request to the worker)
// stored for a git and an archive job.
func TestStoredJobCompat(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stored string
		want   Source
	}{
		{"git", `{"job_id":"5f0c6c1e-1111-4a1a-9a55-0a0b0c0d0e0f","status":"queued","position":0,"created_at":"2026-11-30T10:00:00Z","started_at":null,"finished_at":null,"toolchain":"","source":{"url":"https://example.com/r.git","ref":"main"},"error":"","error_type":"","result_sha256":"","nonce":"01","max_attempts":3}`,
			Source{URL: "https://example.com/r.git", Ref: "main"}},
		{"archive", `{"job_id":"5f0c6c1e-2222-4a1a-9a55-0a0b0c0d0e0f","status":"running","position":0,"created_at":"2026-11-30T10:00:00Z","started_at":"2026-11-30T10:00:01Z","finished_at":null,"toolchain":"cargo","source":{"archive_name":"demo.zip","archive_sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","archive_size":4},"error":"","error_type":"","result_sha256":"","nonce":"01","worker":"w1","attempts":1,"max_attempts":3,"building":true,"worker_id":"w1-abc"}`,
			Source{ArchiveName: "demo.zip", ArchiveSHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", ArchiveSize: 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var j Job
			if err := json.Unmarshal([]byte(tc.stored), &j); err != nil {
				t.Fatal(err)
			}
			if j.Source != tc.want {
				t.Fatalf("source %+v, want %+v", j.Source, tc.want)
			}
			// Re-encoded, the record is the one stored: same keys, same
			// values; ArchivePath (a local file) is never written.
			j.Source.ArchivePath = "/var/spool/kettle/source-123"
			data, err := json.Marshal(&j)
			if err != nil {
				t.Fatal(err)
			}
			var got, want map[string]any
			if err := json.Unmarshal(data, &got); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(tc.stored), &want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("re-encoded\n%s\nstored\n%s", data, tc.stored)
			}
		})
	}
}
