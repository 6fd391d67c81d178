package attest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/report"
)

// rootedTSM is the real configfs-tsm, with /sys replaced by a root (the
// report package speaks in /sys/kernel/config/tsm/... paths).
type rootedTSM struct{ sysRoot string }

func (c rootedTSM) path(p string) string {
	return filepath.Join(c.sysRoot, strings.TrimPrefix(filepath.Clean(p), "/sys"))
}

func (c rootedTSM) MkdirTemp(dir, pattern string) (string, error) {
	p, err := os.MkdirTemp(c.path(dir), pattern)
	if err != nil {
		return "", err
	}
	// Hand back the /sys form so that report.ParseTsmPath accepts it.
	return filepath.Join(dir, filepath.Base(p)), nil
}
func (c rootedTSM) ReadFile(name string) ([]byte, error) { return os.ReadFile(c.path(name)) }
func (c rootedTSM) WriteFile(name string, b []byte) error {
	return os.WriteFile(c.path(name), b, 0o220)
}
func (c rootedTSM) RemoveAll(p string) error { return os.Remove(c.path(p)) } // configfs: rmdir
func (c rootedTSM) ReadDir(d string) ([]os.DirEntry, error) {
	return os.ReadDir(c.path(d))
}

func tsmClient(o *options) (configfsi.Client, error) {
	if o.configfs != nil {
		return o.configfs, nil
	}
	dir := filepath.Join(o.sysRoot, "kernel/config/tsm/report")
	st, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", dir)
	}
	return rootedTSM{o.sysRoot}, nil
}

// tsmProbe reports whether configfs-tsm is present with the given provider
// ("sev_guest", "tdx_guest").
func tsmProbe(o *options, provider string) error {
	p, err := tsmProvider(o)
	if err != nil {
		return err
	}
	if p != provider {
		return fmt.Errorf("configfs-tsm provider is %q, not %q", p, provider)
	}
	return nil
}

// tsmProvider creates a report entry and reads its provider.
func tsmProvider(o *options) (string, error) {
	c, err := tsmClient(o)
	if err != nil {
		return "", err
	}
	r, err := report.Create(c, &report.Request{})
	if err != nil {
		return "", err
	}
	defer r.Destroy()
	p, err := r.ReadOption("provider")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(p)), nil
}

// tsmGet makes one report: inblob = inBlob, then outblob (and auxblob).
func tsmGet(o *options, inBlob []byte, aux bool) (*report.Response, error) {
	c, err := tsmClient(o)
	if err != nil {
		return nil, err
	}
	resp, err := report.Get(c, &report.Request{InBlob: inBlob, GetAuxBlob: aux})
	if err != nil {
		return nil, fmt.Errorf("configfs-tsm report: %w", err)
	}
	return resp, nil
}
