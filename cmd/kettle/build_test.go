package main

import (
	"bytes"
	"flag"
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestParseNonce(t *testing.T) {
	tests := []struct {
		in      string
		want    []byte
		wantErr string
	}{
		{"", nil, ""},
		{"00ff", []byte{0, 0xff}, ""},
		{"6ba7b810-9dad-11d1-80b4-00c04fd430c8", []byte{0x6b, 0xa7, 0xb8, 0x10, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8}, ""},
		{"abc", nil, "invalid nonce hex"},
		{"zz", nil, "invalid nonce hex"},
		{strings.Repeat("00", 17), nil, "nonce must be 1-16 bytes"},
	}
	for _, tc := range tests {
		got, err := parseNonce(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("parseNonce(%q) err = %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, tc.want) {
			t.Errorf("parseNonce(%q) = %x, %v", tc.in, got, err)
		}
	}
}

func TestParseInterspersed(t *testing.T) {
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	var f buildFlags
	f.register(fs, true)
	pos, err := parseInterspersed(fs, []string{"--sandbox", "none", "DIR", "--nonce", "00", "--", "--weird"})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(pos, []string{"DIR", "--weird"}) || f.sandbox != "none" || f.nonce != "00" {
		t.Fatalf("pos %q flags %+v", pos, f)
	}
}

func TestBuildUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := runBuild(t.Context(), "build", nil, &out, &errb); code != exitBadArgs {
		t.Fatalf("no DIR: exit %d", code)
	}
	if code := runBuild(t.Context(), "build", []string{t.TempDir() + "/missing"}, &out, &errb); code != exitBadArgs {
		t.Fatalf("missing DIR: exit %d", code)
	}
	errb.Reset()
	if code := runBuild(t.Context(), "build", []string{"--sandbox", "none", t.TempDir()}, &out, &errb); code != exitFailed ||
		!strings.Contains(errb.String(), "UnsupportedToolchain failed") {
		t.Fatalf("empty DIR: exit %d, %s", code, errb.String())
	}
}

// TestBuildIdentity: `kettle build` computes the source identity itself,
// with Go code, before anything runs: a .git that redirects elsewhere (a
// worktree's gitdir file) is refused with the reason, and no git is run.
func TestBuildIdentity(t *testing.T) {
	bin := t.TempDir()
	marker := bin + "/git-ran"
	if err := os.WriteFile(bin+"/git", []byte("#!/bin/sh\ntouch "+marker+"\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	dir := t.TempDir()
	os.WriteFile(dir+"/Cargo.lock", []byte("version = 4\n"), 0o644)
	os.WriteFile(dir+"/.git", []byte("gitdir: /etc\n"), 0o644)
	var out, errb bytes.Buffer
	if code := runBuild(t.Context(), "build", []string{"--sandbox", "none", dir}, &out, &errb); code != exitFailed ||
		!strings.Contains(errb.String(), "InvalidSource failed: cannot compute the source's git identity: .git is not a directory") {
		t.Fatalf("exit %d, %s", code, errb.String())
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("kettle build ran git")
	}
}
