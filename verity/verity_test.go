package verity_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/kettle-build/kettle/verity"
	"github.com/kettle-build/kettle/verity/veritytest"
)

func flip(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	f.ReadAt(b, off)
	b[0] ^= 0x80
	f.WriteAt(b, off)
}

// TestVeritysetupImages: the root hash read from real veritysetup/sgdisk
// images equals the one veritysetup printed, for sha256 and sha512 trees of
// several levels; the data re-hashes to it; a changed data byte or hash
// block is caught.
func TestVeritysetupImages(t *testing.T) {
	for _, alg := range []string{"sha256", "sha512"} {
		t.Run(alg, func(t *testing.T) {
			dir := t.TempDir()
			mk := veritytest.Make(t, dir, "disk-"+alg+".raw", alg, 4)
			img, err := verity.Open(mk.Path)
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			if img.RootHash != mk.RootHash {
				t.Fatalf("root hash %s, veritysetup says %s", img.RootHash, mk.RootHash)
			}
			if img.Superblock.Algorithm != alg || img.Superblock.DataBlocks != 1024 || img.Verity.Index != 2 {
				t.Fatalf("superblock %+v, partition %+v", img.Superblock, img.Verity)
			}
			root, err := img.GPT.Find(verity.TypeRoot)
			if err != nil {
				t.Fatal(err)
			}
			if err := img.VerifyData(context.Background(), root); err != nil {
				t.Fatal(err)
			}

			// A data byte changed: the stored root hash is unchanged, the
			// re-hash catches it.
			flip(t, mk.Path, mk.DataOffset+3*4096+7)
			img2, err := verity.Open(mk.Path)
			if err != nil {
				t.Fatal(err)
			}
			defer img2.Close()
			if img2.RootHash != mk.RootHash {
				t.Fatal("root hash changed with the data")
			}
			if err := img2.VerifyData(context.Background(), root); !errors.Is(err, verity.ErrFormat) || !strings.Contains(err.Error(), "hashes to root") {
				t.Fatalf("changed data: %v", err)
			}
			// The top hash block changed: a different root hash.
			flip(t, mk.Path, mk.HashOffset+4096+1)
			img3, err := verity.Open(mk.Path)
			if err != nil {
				t.Fatal(err)
			}
			defer img3.Close()
			if img3.RootHash == mk.RootHash {
				t.Fatal("root hash unchanged with the top hash block")
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	p := dir + "/x"
	os.WriteFile(p, make([]byte, 8192), 0o644)
	if _, err := verity.Open(p); !errors.Is(err, verity.ErrFormat) {
		t.Fatalf("no GPT: %v", err)
	}
	if _, err := verity.Open(dir + "/missing"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing: %v", err)
	}
	if _, err := verity.Open(dir); err == nil {
		t.Fatal("directory accepted")
	}
}

func TestParseGUID(t *testing.T) {
	g, err := verity.ParseGUID("2c7357ed-ebd2-46d9-aec1-23d437ec2bf5")
	if err != nil || g != verity.TypeRootVerity || g.String() != "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5" {
		t.Fatalf("%v %v", g, err)
	}
	want := [16]byte{0xed, 0x57, 0x73, 0x2c, 0xd2, 0xeb, 0xd9, 0x46, 0xae, 0xc1, 0x23, 0xd4, 0x37, 0xec, 0x2b, 0xf5}
	if [16]byte(g) != want {
		t.Fatalf("on-disk bytes %x", g[:])
	}
}
