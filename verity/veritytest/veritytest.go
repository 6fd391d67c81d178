// Package veritytest makes real dm-verity disk images for tests with
// Debian's veritysetup (cryptsetup-bin) and sgdisk (gdisk): a GPT image
// with a root partition and its root-verity partition, the way
// systemd-repart lays them out.
package veritytest

import (
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/kettle-build/kettle/internal/testenv"
)

// Image describes a disk image Make wrote.
type Image struct {
	Path     string
	RootHash string // as veritysetup printed it
	// DataOffset and HashOffset are the partitions' byte offsets.
	DataOffset, HashOffset int64
}

const mib = 1 << 20

// Make writes dir/name: dataMiB MiB of deterministic data hashed with alg
// (sha256 or sha512), in partition 1 (type root-x86-64) and the verity hash
// device in partition 2 (type root-verity-x86-64).
func Make(t testing.TB, dir, name, alg string, dataMiB int) Image {
	t.Helper()
	veritysetup := testenv.NeedTool(t, "veritysetup")
	sgdisk := testenv.NeedTool(t, "sgdisk")
	data := filepath.Join(dir, name+".data")
	hashes := filepath.Join(dir, name+".hash")
	buf := make([]byte, 0, dataMiB*mib)
	seed := sha256.Sum256([]byte(name + alg))
	for len(buf) < dataMiB*mib {
		seed = sha256.Sum256(seed[:])
		buf = append(buf, seed[:]...)
	}
	if err := os.WriteFile(data, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(veritysetup, "format", "--hash", alg, data, hashes).CombinedOutput()
	if err != nil {
		t.Fatalf("veritysetup format: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`(?m)^Root hash:\s+([0-9a-f]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no root hash in veritysetup output:\n%s", out)
	}
	hst, err := os.Stat(hashes)
	if err != nil {
		t.Fatal(err)
	}
	hashMiB := int((hst.Size() + mib - 1) / mib)
	img := filepath.Join(dir, name)
	size := int64(1+dataMiB+hashMiB+1) * mib
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(sgdisk,
		"-n", fmt.Sprintf("1:2048:+%dM", dataMiB), "-t", "1:4f68bce3-e8cd-4db1-96e7-fbcaf984b709", "-c", "1:root-x86-64",
		"-n", fmt.Sprintf("2:0:+%dM", hashMiB), "-t", "2:2c7357ed-ebd2-46d9-aec1-23d437ec2bf5", "-c", "2:root-x86-64-verity",
		img).CombinedOutput()
	if err != nil {
		t.Fatalf("sgdisk: %v\n%s", err, out)
	}
	first := func(n int) int64 {
		out, err := exec.Command(sgdisk, "-i", strconv.Itoa(n), img).CombinedOutput()
		if err != nil {
			t.Fatalf("sgdisk -i %d: %v\n%s", n, err, out)
		}
		m := regexp.MustCompile(`First sector: (\d+)`).FindSubmatch(out)
		if m == nil {
			t.Fatalf("sgdisk -i %d: no first sector:\n%s", n, out)
		}
		s, _ := strconv.ParseInt(string(m[1]), 10, 64)
		return s * 512
	}
	res := Image{Path: img, RootHash: string(m[1]), DataOffset: first(1), HashOffset: first(2)}
	hb, err := os.ReadFile(hashes)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(buf, res.DataOffset); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(hb, res.HashOffset); err != nil {
		t.Fatal(err)
	}
	os.Remove(data)
	os.Remove(hashes)
	return res
}
