package attest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/uuid"
	"github.com/kettle-build/kettle/failure"
)

// Attester names accepted by New (the --attester flag).
const (
	NameAuto   = "auto"
	NameSimSNP = "sim-snp"
)

// Names lists every attester name New accepts.
var Names = []string{NameAuto, PlatformAzSNP, PlatformAzTDX, PlatformSNP, PlatformTDX, PlatformInsecure, NameSimSNP}

var (
	// ErrUnknownAttester is returned by New for a name not in Names.
	ErrUnknownAttester = errors.New("unknown attester")
	// ErrNoDevice means the TEE interface the attester needs is absent.
	ErrNoDevice = errors.New("TEE device not found")
	// ErrPermission means the TEE interface exists but this process may
	// not use it.
	ErrPermission = errors.New("TEE device permission denied")
)

// Warner is implemented by attesters whose evidence proves nothing about the
// machine (insecure, sim-snp): callers show Warning at start-up and in every
// build's attest event.
type Warner interface {
	Warning() string
}

// WarningOf returns a's warning, or "".
func WarningOf(a Attester) string {
	if w, ok := a.(Warner); ok {
		return w.Warning()
	}
	return ""
}

// New returns the attester by name: "auto", "az-snp", "az-tdx", "snp",
// "tdx", "insecure", "sim-snp". "auto" detects the platform (Azure by DMI
// chassis asset tag and vTPM; configfs-tsm provider; /dev/sev-guest,
// /dev/tdx_guest) and falls back to "insecure" with a loud warning. New
// checks that the device is usable, so a misconfigured host fails at
// start-up with a message naming the device.
func New(ctx context.Context, name string, opts ...Option) (Attester, error) {
	o := newOptions(opts)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if name == NameAuto || name == "" {
		d := detect(o)
		o.log.Info("attest: auto-detected platform", "platform", d.Platform, "reasons", strings.Join(d.Reasons, "; "))
		name = d.Platform
	}
	var (
		a   Attester
		err error
	)
	switch name {
	case PlatformAzSNP, PlatformAzTDX:
		az := &azAttester{platform: name, o: o}
		err = az.probe()
		a = az
	case PlatformSNP:
		a, err = newSNP(o)
	case PlatformTDX:
		a, err = newTDX(o)
	case PlatformInsecure:
		a = insecureAttester{}
	case NameSimSNP:
		a, err = newSimSNP(o)
	default:
		return nil, fmt.Errorf("attest: %w %q (want one of %s)", ErrUnknownAttester, name, strings.Join(Names, ", "))
	}
	if err != nil {
		if !strings.HasPrefix(err.Error(), "attest:") {
			err = fmt.Errorf("attest: %s: %w", name, err)
		}
		return nil, err
	}
	if w := WarningOf(a); w != "" {
		o.log.Warn("attest: " + w)
	}
	return a, nil
}

// Detection is what auto-detection found.
type Detection struct {
	Platform string   // an attester name; "insecure" when no TEE was found
	Reasons  []string // one line per probe, in order
}

func (d Detection) String() string {
	return d.Platform + ": " + strings.Join(d.Reasons, "; ")
}

// Detect explains what auto-detection finds on this machine (for start-up
// logs and `kettle attest`).
func Detect(opts ...Option) Detection { return detect(newOptions(opts)) }

func detect(o *options) Detection {
	var d Detection
	say := func(format string, args ...any) { d.Reasons = append(d.Reasons, fmt.Sprintf(format, args...)) }

	// Azure: the DMI asset tag, then the vTPM and the kind of HCL report.
	tagPath := filepath.Join(o.sysRoot, "class/dmi/id/chassis_asset_tag")
	tag, err := os.ReadFile(tagPath)
	switch {
	case err != nil:
		say("no DMI chassis asset tag (%v): not Azure", shortErr(err))
	case strings.TrimSpace(string(tag)) != AzureAssetTag:
		say("DMI chassis asset tag %q is not Azure's", strings.TrimSpace(string(tag)))
	default:
		say("DMI chassis asset tag is Azure's")
		if p, err := detectAzure(o); err != nil {
			say("Azure but no confidential vTPM: %v", err)
		} else {
			say("vTPM HCL report (NV 0x01400001) is %s", p)
			d.Platform = p
			return d
		}
	}

	if o.snpQP != nil || o.snpDevice != nil {
		say("SEV-SNP quote provider injected")
		d.Platform = PlatformSNP
		return d
	}
	if o.tdxQP != nil || o.tdxDevice != nil {
		say("TDX quote provider injected")
		d.Platform = PlatformTDX
		return d
	}

	// configfs-tsm names its provider.
	switch p, err := tsmProvider(o); {
	case err != nil:
		say("no configfs-tsm (%v)", shortErr(err))
	case p == "sev_guest":
		say("configfs-tsm provider sev_guest")
		d.Platform = PlatformSNP
		return d
	case p == "tdx_guest":
		say("configfs-tsm provider tdx_guest")
		d.Platform = PlatformTDX
		return d
	default:
		say("configfs-tsm provider %q is not supported", p)
	}

	for _, dev := range []struct{ name, platform string }{{"sev-guest", PlatformSNP}, {"tdx_guest", PlatformTDX}} {
		p := filepath.Join(o.devRoot, dev.name)
		if _, err := os.Stat(p); err != nil {
			say("no %s", p)
			continue
		}
		if f, err := os.OpenFile(p, os.O_RDWR, 0); err != nil {
			say("%s exists but cannot be opened: %v", p, shortErr(err))
		} else {
			f.Close()
			say("%s present", p)
		}
		d.Platform = dev.platform
		return d
	}
	say("no TEE found: falling back to insecure")
	d.Platform = PlatformInsecure
	return d
}

// detectAzure reads the HCL report's type from the vTPM.
func detectAzure(o *options) (string, error) {
	t, closeFn, err := openTPM(o)
	if err != nil {
		return "", err
	}
	defer closeFn()
	raw, err := nvReadAll(t, AzureHCLReportIndex)
	if err != nil {
		return "", fmt.Errorf("no HCL report at NV 0x01400001: %w", err)
	}
	h, err := ParseHCLReport(raw)
	if err != nil {
		return "", err
	}
	switch h.ReportType {
	case hclReportTypeSNP:
		return PlatformAzSNP, nil
	case hclReportTypeTDX:
		return PlatformAzTDX, nil
	}
	return "", fmt.Errorf("HCL report type %d is neither SNP (2) nor TDX (4)", h.ReportType)
}

func shortErr(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// attestFailed classifies an Attest error for the build's client.
func attestFailed(platform string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("attest: %s: %w", platform, err) // Canceled / Timeout, not a TEE failure
	}
	// The detail names devices and metadata URLs, never job or data paths,
	// so it is safe (and useful) to show the client.
	return failure.Wrap(failure.AttestationFailed, fmt.Errorf("attest: %s: %w", platform, err),
		"attestation failed ("+platform+"): "+err.Error())
}

func mustGUID(s string) uuid.UUID { return uuid.MustParse(s) }
