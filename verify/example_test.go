package verify_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kettle-build/kettle/verify"
)

// Verify a result directory with a nonce and a builder policy, and print the
// table that `kettle verify` prints.
func ExampleBundle() {
	dir := filepath.Join("testdata", "kettle-v1", "kex")
	r, err := verify.Bundle(context.Background(), dir,
		verify.WithNonce(make([]byte, 16)),
		verify.WithPolicy(verify.Policy{BuilderID: "https://lunal.dev/kettle-tee/v1"}),
	)
	if err != nil { // only when the inputs cannot be read
		fmt.Println(err)
		return
	}
	fmt.Println(r.Passed(), r.BuildID)
	for _, c := range r.Failed() {
		fmt.Println("failed:", c.Name, c.Detail)
	}
	// verify.WriteTable(os.Stdout, r)
	// Output: true build-20260520-215239-dde1b50e
}

// Check evidence on its own, requiring it to bind given report data.
func ExampleEvidence() {
	ev, _ := os.ReadFile(filepath.Join("testdata", "attestation", "az_snp", "live-evidence.json"))
	c, err := verify.Evidence(context.Background(), ev, verify.WithExpectedReportData([]byte("attestation-test-fixture")))
	fmt.Println(c.Platform, c.Generation, err)
	// Output: az-snp Milan <nil>
}
