package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kettle-build/kettle/attest"
	"github.com/kettle-build/kettle/bench/harness"
	"github.com/kettle-build/kettle/igvm"
	"github.com/kettle-build/kettle/igvm/igvmtest"
	"github.com/kettle-build/kettle/verity/veritytest"
)

// TestIGVMImagePolicy: the whole image-policy path without hardware. A
// guest IGVM (kernel command line with the image's dm-verity roothash=) is
// measured; `kettle serve --attester sim-snp --sim-measurement` signs a
// report with that MEASUREMENT; the downloaded result passes
// `kettle verify --igvm --image --trust-roots`, and the same result fails
// against an IGVM with one changed page and against another disk image.
func TestIGVMImagePolicy(t *testing.T) {
	tmp := t.TempDir()
	img := veritytest.Make(t, tmp, "disk.raw", "sha256", 2)
	other := veritytest.Make(t, tmp, "other.raw", "sha512", 2)

	cmdline := "console=hvc0 roothash=" + img.RootHash
	guest := filepath.Join(tmp, "guest.igvm")
	if err := os.WriteFile(guest, igvmtest.GuestBytes(cmdline), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := igvm.Parse(igvmtest.GuestBytes(cmdline))
	if err != nil {
		t.Fatal(err)
	}
	m, err := f.SNPLaunchDigest(igvm.QEMU)
	if err != nil {
		t.Fatal(err)
	}
	g := igvmtest.Guest(cmdline)
	g.Directives[1].Data = append([]byte(nil), g.Directives[1].Data...)
	g.Directives[1].Data[4000] ^= 1
	b, err := g.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	changed := filepath.Join(tmp, "changed.igvm")
	os.WriteFile(changed, b, 0o644)

	roots := filepath.Join(tmp, "sim-roots.pem")
	var buf bytes.Buffer
	if err := attest.WriteSimRoots(&buf); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(roots, buf.Bytes(), 0o644)

	repo := serveRepo(t, "igvm", 0)
	_, c := server(t, "", "--attester", "sim-snp", "--sim-measurement", m.Digest.String())
	harness.WaitReady(t, c)
	nonce := harness.NewNonce()
	id, evs, res := buildAndWait(t, c, harness.BuildRequest{Nonce: nonce, RepoURL: repo.URL, RepoRef: "v1"})
	if res.Status != "ok" {
		t.Fatalf("%+v\n%s", res, eventLog(evs))
	}
	tarball, _ := download(t, c, id)
	dir := extract(t, tarball)

	out := kettleVerify(t, dir, "--nonce", nonce, "--trust-roots", roots, "--igvm", guest, "--image", img.Path)
	for _, want := range []string{"Launch measurement is the IGVM file's SEV-SNP launch digest", m.Digest.String(), img.RootHash, "Verification PASSED"} {
		if !strings.Contains(out, want) {
			t.Errorf("kettle verify output lacks %q:\n%s", want, out)
		}
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"changed page", []string{"--igvm", changed}, m.Digest.String()},
		{"other image", []string{"--igvm", guest, "--image", other.Path}, other.RootHash},
	} {
		cmd := exec.Command(kettleBin, append(append([]string{"verify", "--nonce", nonce, "--trust-roots", roots}, tc.args...), dir)...)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			t.Errorf("%s: exit %v, want 1:\n%s", tc.name, err, out)
		}
		if !strings.Contains(string(out), tc.want) || !strings.Contains(string(out), "Verification FAILED") {
			t.Errorf("%s: output lacks %q or FAILED:\n%s", tc.name, tc.want, out)
		}
	}
}
