package verify

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kettle-build/kettle/igvm"
	"github.com/kettle-build/kettle/verity"
)

// maxIGVM bounds the IGVM file read into memory (firmware, kernel and
// initrd are tens of MB).
const maxIGVM = 1 << 30

// imagePolicy is the guest-image expectation of WithIGVM and WithImage.
type imagePolicy struct {
	igvmPath  string
	loader    igvm.Loader
	loaderSet bool
	imagePath string

	// Filled by load.
	digest   igvm.Measurement
	rootHash string // roothash= of the IGVM's kernel command line (with an image)
	img      *verity.Image
}

// WithIGVM requires the evidence's launch measurement (SNP MEASUREMENT) to
// be the SEV-SNP launch digest of the IGVM file at path, as QEMU/KVM
// launches it (see WithIGVMLoader). It is an expectation. Bundle fails with
// ErrUnreadable naming the file when it cannot be read or is not a valid
// IGVM file with an SEV-SNP platform.
func WithIGVM(path string) BundleOption {
	return bundleOpt(func(o *options) error {
		if path == "" {
			return optErr("WithIGVM: empty path")
		}
		if o.image.igvmPath != "" && o.image.igvmPath != path {
			return optErr("two IGVM files (%s, %s)", o.image.igvmPath, path)
		}
		o.image.igvmPath = path
		return nil
	})
}

// WithIGVMLoader says how the VMM loads the IGVM file (default igvm.QEMU,
// QEMU's IGVM backend on KVM, as the peer computes it; igvm.Direct for
// sev-snp-measure's model of OVMF launched by QEMU without IGVM, EC2, GCE).
func WithIGVMLoader(l igvm.Loader) BundleOption {
	return bundleOpt(func(o *options) error {
		if l != igvm.QEMU && l != igvm.Direct {
			return optErr("WithIGVMLoader: unknown loader %d", int(l))
		}
		if o.image.loaderSet && o.image.loader != l {
			return optErr("two IGVM loaders")
		}
		o.image.loader, o.image.loaderSet = l, true
		return nil
	})
}

// WithImage requires the dm-verity root hash of the disk image at path (its
// only root-verity partition) to be the roothash= on the kernel command
// line of the WithIGVM file (the .cmdline of the UKI its kernel HOB names),
// and, when the image has a root-x86-64 partition, its data to hash to that
// root. It needs WithIGVM. Bundle fails with ErrUnreadable naming the file
// when the image cannot be read or has no valid verity partition.
func WithImage(path string) BundleOption {
	return bundleOpt(func(o *options) error {
		if path == "" {
			return optErr("WithImage: empty path")
		}
		if o.image.imagePath != "" && o.image.imagePath != path {
			return optErr("two disk images (%s, %s)", o.image.imagePath, path)
		}
		o.image.imagePath = path
		return nil
	})
}

func (ip *imagePolicy) validate() error {
	if ip.imagePath != "" && ip.igvmPath == "" {
		return optErr("WithImage (--image) needs WithIGVM (--igvm): the root hash is checked against the IGVM's kernel command line")
	}
	if ip.loaderSet && ip.igvmPath == "" {
		return optErr("WithIGVMLoader without WithIGVM")
	}
	return nil
}

// load reads and measures the IGVM file and opens the disk image.
func (ip *imagePolicy) load() error {
	if ip.igvmPath == "" {
		return nil
	}
	bad := func(path string, err error) error {
		return fmt.Errorf("%w: %s: %w", ErrUnreadable, path, err)
	}
	b, err := readLimited(os.DirFS(filepath.Dir(ip.igvmPath)), filepath.Base(ip.igvmPath), maxIGVM)
	if err != nil {
		return err
	}
	f, err := igvm.Parse(b)
	if err != nil {
		return bad(ip.igvmPath, err)
	}
	if ip.digest, err = f.SNPLaunchDigest(ip.loader); err != nil {
		return bad(ip.igvmPath, err)
	}
	if ip.imagePath == "" {
		return nil
	}
	cmd, err := f.KernelCmdline()
	if err != nil {
		return bad(ip.igvmPath, err)
	}
	if ip.rootHash, err = igvm.RootHash(cmd); err != nil {
		return bad(ip.igvmPath, err)
	}
	if ip.img, err = verity.Open(ip.imagePath); err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("%w: %w", ErrUnreadable, err)
		}
		return bad(ip.imagePath, err)
	}
	return nil
}

func (ip *imagePolicy) close() {
	if ip.img != nil {
		ip.img.Close()
	}
}

// Row names of the image checks.
const (
	checkIGVM  = "Launch measurement is the IGVM file's SEV-SNP launch digest"
	checkImage = "Disk image dm-verity root hash is the IGVM kernel command line's roothash="
)

// checks returns the image rows for a report whose evidence is (or is not)
// genuine.
func (ip *imagePolicy) checks(ctx context.Context, r *Report) []Check {
	if ip.igvmPath == "" {
		return nil
	}
	var out []Check
	m := Check{Name: checkIGVM, Show: true}
	want := ip.digest.Digest.String()
	switch {
	case r.Claims == nil || !r.evidenceOK:
		m.Skipped, m.Detail = true, "not checked: the evidence is not genuine"
	case r.Platform != PlatformSNP && r.Platform != PlatformAzSNP && r.Platform != PlatformGCPSNP:
		m.Detail = fmt.Sprintf("the evidence is %s; an IGVM launch digest is an SEV-SNP MEASUREMENT", r.Platform)
	case bytes.Equal(r.Claims.Measurement, ip.digest.Digest[:]):
		m.OK = true
		m.Detail = fmt.Sprintf("%s (%s: %d pages, %d VMSAs, %s loader)", want, ip.igvmPath, ip.digest.Pages, ip.digest.VMSAs, ip.loader)
	default:
		m.Detail = fmt.Sprintf("attested measurement %s, launch digest of %s (%s loader) %s",
			hex.EncodeToString(r.Claims.Measurement), ip.igvmPath, ip.loader, want)
	}
	out = append(out, m)
	if ip.img == nil {
		return out
	}
	c := Check{Name: checkImage, Show: true}
	if ip.img.RootHash != ip.rootHash {
		c.Detail = fmt.Sprintf("%s (partition %d) has root hash %s, the IGVM's kernel command line roothash=%s",
			ip.imagePath, ip.img.Verity.Index, ip.img.RootHash, ip.rootHash)
		return append(out, c)
	}
	c.OK = true
	c.Detail = fmt.Sprintf("%s (%s, partition %d)", ip.rootHash, ip.img.Superblock.Algorithm, ip.img.Verity.Index)
	root, err := ip.img.GPT.Find(verity.TypeRoot)
	if err != nil {
		c.Detail += "; data not re-hashed: " + err.Error()
		return append(out, c)
	}
	if err := ip.img.VerifyData(ctx, root); err != nil {
		c.OK, c.Detail = false, err.Error()
		return append(out, c)
	}
	c.Detail += fmt.Sprintf("; data partition %d re-hashed to it", root.Index)
	return append(out, c)
}
