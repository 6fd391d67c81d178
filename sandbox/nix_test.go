package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kettle-build/kettle/internal/testenv"
)

// TestBwrapNixJobStore: a job's own directory mounted at /nix (Cmd.Mounts)
// is a working single-user Nix store inside the sandbox: `nix build`
// realises a derivation into it, and nothing of the host's /nix is
// visible or written. Without the mount there is no /nix at all.
func TestBwrapNixJobStore(t *testing.T) {
	b := newTestBwrap(t)
	testenv.NeedTool(t, "nix")
	env := []string{"PATH=/usr/bin:/bin"}
	w := workDir(t)
	proj := mkdir(t, filepath.Join(w, "proj"))
	home := mkdir(t, filepath.Join(w, "home"))
	conf := mkdir(t, filepath.Join(w, "conf"))
	store := mkdir(t, filepath.Join(w, "store"))
	writeTestFile(t, filepath.Join(conf, "nix.conf"), "experimental-features = nix-command flakes\nsandbox = false\nbuild-users-group =\nsubstituters =\n")
	// A fresh name every run, so a host store could not already hold it.
	name := fmt.Sprintf("kettle-sandbox-test-%d", time.Now().UnixNano())
	writeTestFile(t, filepath.Join(proj, "flake.nix"), `{
  outputs = { self }: {
    packages.x86_64-linux.default = derivation {
      name = "`+name+`";
      system = "x86_64-linux";
      builder = "/bin/sh";
      args = [ "-c" "echo built in the sandbox > $out" ];
    };
  };
}
`)
	env = append(env, "HOME="+home, "NIX_CONF_DIR="+conf, "NIX_USER_CONF_FILES="+conf+"/nix.conf", "TMPDIR=/tmp")
	args := []string{"nix", "build", "--json", "--no-link", "path:" + proj}
	var out bytes.Buffer
	cmd := &Cmd{Args: args, Dir: proj, Env: env, Writable: []string{home}, ReadOnly: []string{conf}, Output: &out,
		Mounts: []Mount{{Source: store, Target: "/nix", Writable: true}},
		Limits: Limits{Wall: 5 * time.Minute, Memory: 2 << 30, Procs: 256}}
	if err := b.Run(context.Background(), cmd); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	s := out.String()
	i := strings.Index(s, "[{")
	var res []struct{ Outputs map[string]string }
	if i < 0 || json.Unmarshal([]byte(s[i:]), &res) != nil || len(res) != 1 {
		t.Fatalf("nix build --json:\n%s", s)
	}
	p := res[0].Outputs["out"]
	if !strings.HasPrefix(p, "/nix/store/") {
		t.Fatalf("output %q", p)
	}
	got, err := os.ReadFile(filepath.Join(store, strings.TrimPrefix(p, "/nix/")))
	if err != nil || string(got) != "built in the sandbox\n" {
		t.Fatalf("output in the job's store: %v %q", err, got)
	}
	if _, err := os.Lstat(p); err == nil {
		t.Errorf("%s appeared in the host's store", p)
	}

	// Inside, /nix/store is exactly the job's directory.
	out.Reset()
	cmd.Args = []string{"sh", "-c", "ls -A /nix/store"}
	cmd.Output = &out
	if err := b.Run(context.Background(), cmd); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	ents, err := os.ReadDir(filepath.Join(store, "store"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, e := range ents {
		want = append(want, e.Name())
	}
	if got := strings.Fields(out.String()); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("/nix/store in the sandbox lists %q, the job's store %q", got, want)
	}

	// Without the mount there is no Nix store to see.
	out.Reset()
	cmd = &Cmd{Args: []string{"sh", "-c", "ls -d /nix"}, Dir: proj, Env: env, Writable: []string{home}, Output: &out}
	if err := b.Run(context.Background(), cmd); err == nil {
		t.Fatalf("/nix visible without a mount:\n%s", out.String())
	}
}
