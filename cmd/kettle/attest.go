package main

import (
	"context"
	"os"
)

func init() {
	register("attest", "build DIR, then write evidence.json binding the provenance and --nonce", func(ctx context.Context, args []string) int {
		return runBuild(ctx, "attest", args, os.Stdout, os.Stderr)
	})
}
