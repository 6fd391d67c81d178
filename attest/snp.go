package attest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"

	sevabi "github.com/google/go-sev-guest/abi"
	sevclient "github.com/google/go-sev-guest/client"
	labi "github.com/google/go-sev-guest/client/linuxabi"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/kettle-build/kettle/abi"
	"golang.org/x/sys/unix"
)

// snpAttester makes bare-metal (or GCP) SEV-SNP evidence: REPORT_DATA =
// pad64(report data), through configfs-tsm or /dev/sev-guest.
type snpAttester struct {
	o       *options
	mu      sync.Mutex
	src     string // what produces reports, for logs
	get     func(rd [64]byte) (report, certTable []byte, err error)
	warning string // sim-snp only
}

func (a *snpAttester) Platform() string { return PlatformSNP }

// Warning is non-empty for sim-snp.
func (a *snpAttester) Warning() string { return a.warning }

// newSNP picks the report source: an injected quote provider, configfs-tsm
// with provider sev_guest, then the sev-guest device.
func newSNP(o *options) (*snpAttester, error) {
	a := &snpAttester{o: o}
	switch {
	case o.snpQP != nil:
		a.src = "injected quote provider"
		a.get = func(rd [64]byte) ([]byte, []byte, error) { return splitRawQuote(o.snpQP.GetRawQuote(rd)) }
		return a, nil
	}
	tsmErr := tsmProbe(o, "sev_guest")
	if tsmErr == nil {
		a.src = "configfs-tsm"
		a.get = func(rd [64]byte) ([]byte, []byte, error) {
			resp, err := tsmGet(o, rd[:], true)
			if err != nil {
				// Some kernels fail auxblob when the host has no certificates.
				if resp, err = tsmGet(o, rd[:], false); err != nil {
					return nil, nil, err
				}
			}
			return resp.OutBlob, resp.AuxBlob, nil
		}
		return a, nil
	}
	dev := o.snpDevice
	path := filepath.Join(o.devRoot, "sev-guest")
	if dev == nil {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("%w (configfs-tsm: %v)", deviceError(path, err, "the SEV-SNP guest device"), tsmErr)
		}
		dev = &sevDevice{fd: -1}
	}
	a.src = path
	a.get = func(rd [64]byte) ([]byte, []byte, error) {
		if err := dev.Open(path); err != nil {
			return nil, nil, deviceError(path, err, "the SEV-SNP guest device")
		}
		defer dev.Close()
		report, certs, err := sevclient.GetRawExtendedReportAtVmpl(dev, rd, 0)
		if err != nil {
			// Hosts without a certificate table answer only the plain request.
			r, err2 := sevclient.GetRawReportAtVmpl(dev, rd, 0)
			if err2 != nil {
				return nil, nil, fmt.Errorf("SNP_GET_EXT_REPORT: %v; SNP_GET_REPORT: %w", err, err2)
			}
			return r, nil, nil
		}
		return report, certs, nil
	}
	return a, nil
}

// splitRawQuote splits a go-sev-guest raw quote (report ‖ certificate table).
func splitRawQuote(raw []byte, err error) ([]byte, []byte, error) {
	if err != nil {
		return nil, nil, err
	}
	if len(raw) < sevabi.ReportSize {
		return nil, nil, fmt.Errorf("SNP report is %d bytes, want %d", len(raw), sevabi.ReportSize)
	}
	return raw[:sevabi.ReportSize], raw[sevabi.ReportSize:], nil
}

func (a *snpAttester) Attest(ctx context.Context, rd [ReportDataSize]byte) ([]byte, error) {
	ev, err := a.attest(ctx, rd)
	if err != nil {
		return nil, attestFailed(PlatformSNP, err)
	}
	return ev, nil
}

func (a *snpAttester) attest(ctx context.Context, rd [ReportDataSize]byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var rd64 [64]byte
	copy(rd64[:], rd[:])
	a.mu.Lock()
	report, certs, err := a.get(rd64)
	a.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("get SNP report via %s: %w", a.src, err)
	}
	ev, err := snpEvidence(ctx, a.o, report, certs, rd64)
	if err != nil {
		return nil, err
	}
	return abi.Marshal(PlatformSNP, ev)
}

// snpEvidence checks a raw report against the requested REPORT_DATA and
// assembles the evidence, fetching the VCEK from AMD KDS when the host's
// certificate table has none.
func snpEvidence(ctx context.Context, o *options, report, certTable []byte, rd64 [64]byte) (*abi.SNPEvidence, error) {
	if len(report) < sevabi.ReportSize {
		return nil, fmt.Errorf("SNP report is %d bytes, want %d", len(report), sevabi.ReportSize)
	}
	report = report[:sevabi.ReportSize]
	if _, err := sevabi.ReportToProto(report); err != nil {
		return nil, fmt.Errorf("parse SNP report: %w", err)
	}
	if string(report[0x50:0x90]) != string(rd64[:]) {
		return nil, errors.New("the SNP report's REPORT_DATA differs from the requested report data")
	}
	ev := &abi.SNPEvidence{AttestationReport: b64std.EncodeToString(report)}
	vcek, ask, ark := certsFromTable(certTable)
	if vcek == nil {
		var err error
		vcek, err = fetchKDSVCEK(ctx, o, report)
		if err != nil {
			// Still valid evidence: `kettle verify --online` fetches it.
			o.log.Warn("attest: the host gave no VCEK and AMD KDS could not be reached; evidence.json has a null cert_chain and needs `kettle verify --online`",
				"error", err)
			return ev, nil
		}
	}
	ev.CertChain = &abi.SNPCertChain{VCEK: strPtr(b64std.EncodeToString(vcek))}
	if ask != nil {
		ev.CertChain.ASK = strPtr(b64std.EncodeToString(ask))
	}
	if ark != nil {
		ev.CertChain.ARK = strPtr(b64std.EncodeToString(ark))
	}
	return ev, nil
}

// certsFromTable returns the VCEK, ASK and ARK of an AMD certificate table;
// nil for those absent or when the table is empty or malformed.
func certsFromTable(table []byte) (vcek, ask, ark []byte) {
	if len(table) == 0 {
		return nil, nil, nil
	}
	var ct sevabi.CertTable
	if err := ct.Unmarshal(table); err != nil {
		return nil, nil, nil
	}
	get := func(guid string) []byte {
		b, err := ct.GetByGUIDString(guid)
		if err != nil || len(b) == 0 {
			return nil
		}
		return b
	}
	return get(sevabi.VcekGUID), get(sevabi.AskGUID), get(sevabi.ArkGUID)
}

// snpProductLine names the AMD product line of a v3+ report by its CPUID
// family/model (attestation-rs' table; go-sev-guest misses Zen 4c).
func snpProductLine(report []byte) (string, error) {
	if binary.LittleEndian.Uint32(report[0:4]) < 3 {
		return "", errors.New("report version < 3 carries no CPUID family/model")
	}
	fam, model := report[0x188], report[0x189]
	switch {
	case fam == 0x19 && model <= 0x0F:
		return "Milan", nil
	case fam == 0x19 && (model >= 0x10 && model <= 0x1F || model >= 0xA0 && model <= 0xAF):
		return "Genoa", nil
	case fam == 0x1A && model <= 0x11:
		return "Turin", nil
	}
	return "", fmt.Errorf("unknown AMD family %#x model %#x", fam, model)
}

// kdsVCEKURL is the AMD KDS URL of the VCEK that signed report.
func kdsVCEKURL(base string, report []byte) (string, error) {
	line, err := snpProductLine(report)
	if err != nil {
		return "", err
	}
	chipID := report[0x1A0:0x1E0]
	allZero := true
	for _, b := range chipID {
		if b != 0 {
			allZero = false
		}
	}
	if allZero {
		return "", errors.New("the report's CHIP_ID is masked")
	}
	tcb := report[0x180:0x188] // REPORTED_TCB
	base = strings.TrimRight(base, "/")
	if line == "Turin" {
		return fmt.Sprintf("%s/vcek/v1/%s/%x?fmcSPL=%d&blSPL=%d&teeSPL=%d&snpSPL=%d&ucodeSPL=%d",
			base, line, chipID[:8], tcb[0], tcb[1], tcb[2], tcb[3], tcb[7]), nil
	}
	return fmt.Sprintf("%s/vcek/v1/%s/%x?blSPL=%d&teeSPL=%d&snpSPL=%d&ucodeSPL=%d",
		base, line, chipID, tcb[0], tcb[1], tcb[6], tcb[7]), nil
}

func fetchKDSVCEK(ctx context.Context, o *options, report []byte) ([]byte, error) {
	if o.kdsBase == "" {
		return nil, errors.New("AMD KDS disabled")
	}
	u, err := kdsVCEKURL(o.kdsBase, report)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	der, err := imdsDo(ctx, o.kdsClient, req)
	if err != nil {
		return nil, fmt.Errorf("fetch the VCEK from AMD KDS: %w", err)
	}
	return der, nil
}

// sevDevice is /dev/sev-guest without go-sev-guest's 2-second self-throttle
// between ioctls (kernels since 6.1 pace guest requests themselves).
type sevDevice struct{ fd int }

func (d *sevDevice) Open(path string) error {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		d.fd = -1
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	d.fd = fd
	return nil
}

func (d *sevDevice) Close() error {
	if d.fd < 0 {
		return nil
	}
	err := unix.Close(d.fd)
	d.fd = -1
	return err
}

func (d *sevDevice) Ioctl(command uintptr, req any) (uintptr, error) {
	sreq, ok := req.(*labi.SnpUserGuestRequest)
	if !ok {
		return 0, fmt.Errorf("unexpected sev-guest request %T", req)
	}
	conv := sreq.ABI()
	result, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(d.fd), command, uintptr(conv.Pointer()))
	if err := conv.Finish(sreq); err != nil {
		return 0, fmt.Errorf("finish sev-guest request: %w", err)
	}
	if errno != unix.EIO {
		sreq.FwErr = 0 // the kernel leaves garbage here on other errors
	}
	if errno != 0 {
		return 0, errno
	}
	return result, nil
}

func (d *sevDevice) Product() *spb.SevProduct { return sevabi.SevProduct() }
