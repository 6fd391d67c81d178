package attest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	tdxclient "github.com/google/go-tdx-guest/client"
	"github.com/kettle-build/kettle/abi"
)

const (
	tdxQuoteHeaderSize   = 48
	tdxTEETypeTDX        = 0x81
	tdxMaxEventLog       = 8 << 20
	tdxBodyTypeOffsetV5  = 48
	tdxBodyV5            = 54 // v5: type u16 @48, size u32 @50, body @54
	tdxReportDataInBody  = 520
	tdxReportDataSizeLen = 64
)

// tdxAttester makes bare-metal (or GCP) TDX evidence: REPORT_DATA =
// pad64(report data), through configfs-tsm or /dev/tdx_guest.
type tdxAttester struct {
	o   *options
	mu  sync.Mutex
	src string
	get func(rd [64]byte) ([]byte, error)
}

func (a *tdxAttester) Platform() string { return PlatformTDX }

func newTDX(o *options) (*tdxAttester, error) {
	a := &tdxAttester{o: o}
	if o.tdxQP != nil {
		a.src = "injected quote provider"
		a.get = func(rd [64]byte) ([]byte, error) {
			if err := o.tdxQP.IsSupported(); err != nil {
				return nil, err
			}
			return o.tdxQP.GetRawQuote(rd)
		}
		return a, nil
	}
	tsmErr := tsmProbe(o, "tdx_guest")
	if tsmErr == nil {
		a.src = "configfs-tsm"
		a.get = func(rd [64]byte) ([]byte, error) {
			resp, err := tsmGet(o, rd[:], false)
			if err != nil {
				return nil, err
			}
			return resp.OutBlob, nil
		}
		return a, nil
	}
	dev := o.tdxDevice
	path := filepath.Join(o.devRoot, "tdx_guest")
	if dev == nil {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("%w (configfs-tsm: %v)", deviceError(path, err, "the TDX guest device"), tsmErr)
		}
		dev = &tdxclient.LinuxDevice{}
	}
	a.src = path
	a.get = func(rd [64]byte) ([]byte, error) {
		if err := dev.Open(path); err != nil {
			return nil, deviceError(path, err, "the TDX guest device")
		}
		defer dev.Close()
		return tdxclient.GetRawQuote(dev, rd)
	}
	return a, nil
}

func (a *tdxAttester) Attest(ctx context.Context, rd [ReportDataSize]byte) ([]byte, error) {
	var rd64 [64]byte
	copy(rd64[:], rd[:])
	ev, err := a.attest64(ctx, rd64)
	if err != nil {
		return nil, attestFailed(PlatformTDX, err)
	}
	return ev, nil
}

// attest64 is Attest with the full 64-byte REPORT_DATA (tests drive it with
// go-tdx-guest's canned quotes, which are keyed by 64 bytes).
func (a *tdxAttester) attest64(ctx context.Context, rd64 [64]byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	a.mu.Lock()
	quote, err := a.get(rd64)
	a.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("get TD quote via %s: %w", a.src, err)
	}
	got, err := TDXQuoteReportData(quote)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(got, rd64[:]) {
		return nil, errors.New("the TD quote's REPORT_DATA differs from the requested report data")
	}
	ev := abi.TDXEvidence{Quote: b64std.EncodeToString(quote)}
	if el := readEventLog(a.o); el != nil {
		ev.CCEventLog = b64std.EncodeToString(el)
	}
	return abi.Marshal(PlatformTDX, ev)
}

// TDXQuoteReportData returns the 64-byte REPORT_DATA of a DCAP quote v4 or v5.
func TDXQuoteReportData(q []byte) ([]byte, error) {
	if len(q) < tdxQuoteHeaderSize {
		return nil, fmt.Errorf("TD quote: %d bytes", len(q))
	}
	version := binary.LittleEndian.Uint16(q[0:2])
	if tee := binary.LittleEndian.Uint32(q[4:8]); tee != tdxTEETypeTDX {
		return nil, fmt.Errorf("TD quote: TEE type %#x is not TDX", tee)
	}
	var body int
	switch version {
	case 4:
		body = tdxQuoteHeaderSize
	case 5:
		if len(q) < tdxBodyV5 {
			return nil, fmt.Errorf("TD quote v5: %d bytes", len(q))
		}
		if t := binary.LittleEndian.Uint16(q[tdxBodyTypeOffsetV5:]); t != 2 && t != 3 {
			return nil, fmt.Errorf("TD quote v5: body type %d", t)
		}
		body = tdxBodyV5
	default:
		return nil, fmt.Errorf("TD quote: version %d, want 4 or 5", version)
	}
	end := body + tdxReportDataInBody + tdxReportDataSizeLen
	if len(q) < end {
		return nil, fmt.Errorf("TD quote v%d: %d bytes, body needs %d", version, len(q), end)
	}
	return q[body+tdxReportDataInBody : end], nil
}

// readEventLog returns the ACPI CCEL table data (the TDX event log), or nil
// when it is absent or unreadable: it only lets a verifier replay RTMRs.
func readEventLog(o *options) []byte {
	if o.ccelPath == "" {
		return nil
	}
	f, err := os.Open(o.ccelPath)
	if err != nil {
		return nil
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, tdxMaxEventLog+1))
	if err != nil || len(b) == 0 || len(b) > tdxMaxEventLog {
		return nil
	}
	return b
}
