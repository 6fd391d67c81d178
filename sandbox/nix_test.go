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

// TestBwrapNix: with Cmd.Nix, `nix build` realises a derivation into the
// machine's store from inside the sandbox (offline); without it, there is no
// Nix store to see.
func TestBwrapNix(t *testing.T) {
	b := newTestBwrap(t)
	env := []string{"PATH=/usr/bin:/bin"}
	if _, err := lookPath("nix", env, "/"); err != nil {
		testenv.Need(t, false, "nix is not installed")
	}
	w := workDir(t)
	proj := mkdir(t, filepath.Join(w, "proj"))
	home := mkdir(t, filepath.Join(w, "home"))
	// A fresh name every run, so the build is not already in the store.
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
	env = append(env, "HOME="+home)
	args := []string{"nix", "--extra-experimental-features", "nix-command flakes", "build",
		"--option", "substituters", "", "--json", "--no-link", "path:" + proj}
	var out bytes.Buffer
	err := b.Run(context.Background(), &Cmd{Args: args, Dir: proj, Env: env, Writable: []string{home}, Nix: true, Output: &out,
		Limits: Limits{Wall: 5 * time.Minute, Memory: 2 << 30, Procs: 256}})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	s := out.String()
	var res []struct{ Outputs map[string]string }
	if err := json.Unmarshal([]byte(s[strings.Index(s, "[{"):]), &res); err != nil || len(res) != 1 {
		t.Fatalf("nix build --json: %v\n%s", err, s)
	}
	got, err := os.ReadFile(res[0].Outputs["out"])
	if err != nil || string(got) != "built in the sandbox\n" {
		t.Fatalf("store output: %v %q", err, got)
	}

	out.Reset()
	err = b.Run(context.Background(), &Cmd{Args: args, Dir: proj, Env: env, Writable: []string{home}, Output: &out})
	if err == nil {
		t.Fatalf("nix build without Cmd.Nix succeeded:\n%s", out.String())
	}
}
