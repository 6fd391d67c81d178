// Command startup measures the whole-process cost of short kettle commands
// (issue 16 point 5: `kettle verify` of a real bundle ≤ 20 ms): it runs each
// command -runs times, alternating them with a hello-world Go binary built
// on the spot as the floor, and prints the median and minimum wall time and
// the median CPU time (user+sys from rusage, less sensitive to other load
// on a shared machine than wall time).
//
//	go build -o /tmp/kettle ./cmd/kettle
//	go run ./bench/startup -bin /tmp/kettle -runs 200
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	bin := flag.String("bin", "", "kettle binary (required); several, comma-separated, are alternated (before/after)")
	runs := flag.Int("runs", 100, "runs per command")
	bundle := flag.String("bundle", "verify/testdata/kettle-v1/kex", "result directory for `kettle verify`")
	flag.Parse()
	if *bin == "" {
		fmt.Fprintln(os.Stderr, "startup: -bin is required")
		os.Exit(2)
	}
	if err := run(strings.Split(*bin, ","), *bundle, *runs); err != nil {
		fmt.Fprintln(os.Stderr, "startup:", err)
		os.Exit(1)
	}
}

type cmd struct {
	name string
	argv []string
	wall []time.Duration
	cpu  []time.Duration
}

func run(bins []string, bundle string, runs int) error {
	hello, err := buildHello()
	if err != nil {
		return err
	}
	defer os.RemoveAll(filepath.Dir(hello))
	cmds := []*cmd{{name: "hello-world Go binary", argv: []string{hello}}}
	for _, bin := range bins {
		tag := ""
		if len(bins) > 1 {
			tag = " [" + filepath.Base(bin) + "]"
		}
		cmds = append(cmds,
			&cmd{name: "kettle version" + tag, argv: []string{bin, "version"}},
			&cmd{name: "kettle verify (kex)" + tag, argv: []string{bin, "verify", "--nonce", "00000000000000000000000000000000", bundle}})
	}
	// One untimed round warms the page cache.
	for _, c := range cmds {
		if _, _, err := once(c.argv); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
	}
	for range runs {
		for _, c := range cmds {
			w, u, err := once(c.argv)
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			c.wall, c.cpu = append(c.wall, w), append(c.cpu, u)
		}
	}
	fmt.Printf("%d runs each, alternated\n", runs)
	fmt.Printf("%-40s %12s %12s %12s\n", "command", "wall median", "wall min", "cpu median")
	for _, c := range cmds {
		fmt.Printf("%-40s %12s %12s %12s\n", c.name, ms(median(c.wall)), ms(slices.Min(c.wall)), ms(median(c.cpu)))
	}
	return nil
}

func once(argv []string) (wall, cpu time.Duration, err error) {
	c := exec.Command(argv[0], argv[1:]...)
	start := time.Now()
	out, err := c.CombinedOutput()
	wall = time.Since(start)
	if err != nil {
		return 0, 0, fmt.Errorf("%w: %s", err, out)
	}
	ru := c.ProcessState.SysUsage().(*syscall.Rusage)
	cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return wall, cpu, nil
}

func buildHello() (string, error) {
	dir, err := os.MkdirTemp("", "kettle-startup-")
	if err != nil {
		return "", err
	}
	src := filepath.Join(dir, "main.go")
	if err := os.WriteFile(src, []byte("package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello\") }\n"), 0o644); err != nil {
		return "", err
	}
	out := filepath.Join(dir, "hello")
	b := exec.Command("go", "build", "-o", out, src)
	b.Dir = dir
	b.Env = append(os.Environ(), "GO111MODULE=off")
	if msg, err := b.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build hello: %w: %s", err, msg)
	}
	return out, nil
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }
