package main

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The test binary doubles as kettle itself (KETTLE_TEST_RUN_MAIN=1), so the
// --help tests see exactly what a user sees, exit code included.
func TestMain(m *testing.M) {
	if os.Getenv("KETTLE_TEST_RUN_MAIN") == "1" {
		os.Args = append([]string{"kettle"}, os.Args[1:]...)
		main()
		return
	}
	os.Exit(m.Run())
}

var update = flag.Bool("update", false, "rewrite the --help goldens in testdata/help")

// TestHelp (issue 18): every subcommand's --help reads right: it exits 0,
// no flag's argument name is a mangled phrase (flag takes a `quoted` word
// of the usage as the name), and the text matches testdata/help/<cmd>.txt
// (go test -run TestHelp -update rewrites them).
func TestHelp(t *testing.T) {
	host, _ := os.Hostname()
	machine := []struct {
		re   *regexp.Regexp
		with string
	}{
		{regexp.MustCompile(regexp.QuoteMeta(strconv.Quote(host)) + `|"` + regexp.QuoteMeta(host) + `-\d+"`), `"HOST-PID"`},
		{regexp.MustCompile(regexp.QuoteMeta(os.TempDir())), "$TMPDIR"},
	}
	argName := regexp.MustCompile(`(?m)^  -[a-z0-9-]+ (.*)$`)
	for _, cmd := range []string{"serve", "worker", "build", "attest", "verify", "remote build", "remote status", "remote events", "remote result"} {
		t.Run(strings.ReplaceAll(cmd, " ", "-"), func(t *testing.T) {
			c := exec.Command(os.Args[0], append(strings.Fields(cmd), "--help")...)
			var env []string
			for _, kv := range os.Environ() {
				if !strings.HasPrefix(kv, "KETTLE_") {
					env = append(env, kv) // KETTLE_<FLAG> would change the defaults shown
				}
			}
			c.Env = append(env, "KETTLE_TEST_RUN_MAIN=1")
			var out bytes.Buffer
			c.Stdout, c.Stderr = &out, &out
			if err := c.Run(); err != nil {
				t.Fatalf("kettle %s --help: %v\n%s", cmd, err, out.String())
			}
			text := out.String()
			for _, m := range machine {
				text = m.re.ReplaceAllLiteralString(text, m.with)
			}
			for _, m := range argName.FindAllStringSubmatch(text, -1) {
				if strings.Contains(m[1], " ") {
					t.Errorf("flag argument name %q: a `quoted` phrase in the usage became the name", m[1])
				}
			}
			golden := filepath.Join("testdata", "help", strings.ReplaceAll(cmd, " ", "-")+".txt")
			if *update {
				os.MkdirAll(filepath.Dir(golden), 0o755)
				if err := os.WriteFile(golden, []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (go test -run TestHelp -update writes it)", err)
			}
			if text != string(want) {
				t.Errorf("kettle %s --help differs from %s (go test -run TestHelp -update):\n%s", cmd, golden, text)
			}
		})
	}
}
