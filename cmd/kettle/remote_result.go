package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/kettle-build/kettle/client"
)

// kettle remote result JOB: download a job's result tarball.

func runRemoteResult(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var out *string
	c, id, code := remoteJobCmd("result", "result JOB [-o FILE]", args, stderr, func(fs *flag.FlagSet) {
		out = fs.String("o", "", "write the tarball here (- for stdout; default ./<top>.tar.gz, never overwritten)")
	})
	if code >= 0 {
		return code
	}
	if *out == "-" {
		r, err := c.Result(ctx, id)
		if err != nil {
			fmt.Fprintf(stderr, "kettle remote result: %s\n", describe(err, c.Server()))
			return exitFor(err)
		}
		defer r.Body.Close()
		d, err := client.CopyResult(stdout, r)
		if err != nil {
			fmt.Fprintf(stderr, "kettle remote result: %v\n", err)
			return exitFailed
		}
		fmt.Fprintf(stderr, "kettle remote: %d bytes, sha256 %s\n", d.Size, d.SHA256)
		return exitOK
	}
	path := *out
	if path == "" {
		// The server's name for it is known only from the response: take
		// it into a temporary file first, then refuse to overwrite.
		tmp, err := os.MkdirTemp(".", ".kettle-result-")
		if err != nil {
			fmt.Fprintf(stderr, "kettle remote result: %v\n", err)
			return exitFailed
		}
		defer os.RemoveAll(tmp)
		d, err := c.DownloadFile(ctx, id, filepath.Join(tmp, "result.tar.gz"))
		if err != nil {
			fmt.Fprintf(stderr, "kettle remote result: %s\n", describeLocal(err, c.Server()))
			return exitFor(err)
		}
		name := d.Name
		if name == "" {
			name = id + ".tar.gz"
		}
		if _, err := os.Lstat(name); err == nil {
			fmt.Fprintf(stderr, "kettle remote result: %s exists; pass -o FILE to choose where to write\n", name)
			return exitBadArgs
		}
		if err := os.Rename(d.Path, name); err != nil {
			fmt.Fprintf(stderr, "kettle remote result: %v\n", err)
			return exitFailed
		}
		fmt.Fprintf(stderr, "kettle remote: wrote %s (%d bytes, sha256 %s)\n", name, d.Size, d.SHA256)
		return exitOK
	}
	d, err := c.DownloadFile(ctx, id, path)
	if err != nil {
		fmt.Fprintf(stderr, "kettle remote result: %s\n", describeLocal(err, c.Server()))
		return exitFor(err)
	}
	fmt.Fprintf(stderr, "kettle remote: wrote %s (%d bytes, sha256 %s)\n", path, d.Size, d.SHA256)
	return exitOK
}
