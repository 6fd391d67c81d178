package attest

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	sevclient "github.com/google/go-sev-guest/client"
	tdxclient "github.com/google/go-tdx-guest/client"
	"github.com/google/go-tpm/tpm2/transport"
)

// Option configures New and Detect. Every option exists for injection in
// tests (simulated TPM, mock devices, fake metadata service) or for unusual
// hosts; production uses the defaults. There is deliberately no environment
// variable or file that changes where evidence comes from: a build's
// subprocess must not be able to steer the trusted process.
type Option func(*options)

type options struct {
	tpm        transport.TPM // nil: open devRoot/tpmrm0, then devRoot/tpm0
	devRoot    string
	sysRoot    string
	configfs   configfsi.Client // nil: the real configfs-tsm under sysRoot
	snpQP      sevclient.QuoteProvider
	snpDevice  sevclient.Device
	tdxQP      tdxclient.QuoteProvider
	tdxDevice  tdxclient.Device
	imdsBase   string
	imdsClient *http.Client
	kdsBase    string // "" disables fetching a missing VCEK from AMD KDS
	kdsClient  *http.Client
	now        func() time.Time
	log        *slog.Logger
	// hclTimeout bounds the wait for the Azure HCL to regenerate its report
	// after the report data is written to NV 0x01400002.
	hclTimeout     time.Duration
	hclPoll        time.Duration
	ccelPath       string    // "" disables reading the TDX event log
	simMeasurement *[48]byte // sim-snp MEASUREMENT (WithSimMeasurement, sim.go)
}

const (
	defaultIMDS = "http://169.254.169.254"
	defaultKDS  = "https://kdsintf.amd.com"
)

func newOptions(opts []Option) *options {
	o := &options{
		devRoot:    "/dev",
		sysRoot:    "/sys",
		imdsBase:   defaultIMDS,
		imdsClient: &http.Client{Timeout: 30 * time.Second},
		kdsBase:    defaultKDS,
		kdsClient:  &http.Client{Timeout: 30 * time.Second},
		now:        time.Now,
		log:        slog.Default(),
		hclTimeout: 10 * time.Second,
		hclPoll:    100 * time.Millisecond,
	}
	o.ccelPath = o.sysRoot + "/firmware/acpi/tables/data/CCEL"
	for _, f := range opts {
		f(o)
	}
	return o
}

// WithTPM makes the Azure attesters use t instead of opening /dev/tpmrm0 (for
// example the go-tpm-tools simulator). The caller keeps ownership of t.
func WithTPM(t transport.TPM) Option { return func(o *options) { o.tpm = t } }

// WithDevRoot replaces /dev when looking for tpmrm0, tpm0, sev-guest and
// tdx_guest.
func WithDevRoot(dir string) Option { return func(o *options) { o.devRoot = dir } }

// WithSysRoot replaces /sys when reading the DMI asset tag, configfs-tsm
// (kernel/config/tsm/report) and the TDX event log.
func WithSysRoot(dir string) Option {
	return func(o *options) {
		o.sysRoot = dir
		o.ccelPath = dir + "/firmware/acpi/tables/data/CCEL"
	}
}

// WithConfigFS replaces the configfs-tsm file system (e.g. go-configfs-tsm's
// faketsm). Paths it sees are under /sys/kernel/config/tsm.
func WithConfigFS(c configfsi.Client) Option { return func(o *options) { o.configfs = c } }

// WithSNPQuoteProvider makes the snp attester use qp (e.g. go-sev-guest's
// testing.QuoteProvider) instead of configfs-tsm or /dev/sev-guest.
func WithSNPQuoteProvider(qp sevclient.QuoteProvider) Option {
	return func(o *options) { o.snpQP = qp }
}

// WithSNPDevice makes the snp attester's /dev/sev-guest fallback use d (e.g.
// go-sev-guest's testing.Device). The device is opened and closed per report.
func WithSNPDevice(d sevclient.Device) Option { return func(o *options) { o.snpDevice = d } }

// WithTDXQuoteProvider makes the tdx attester use qp instead of configfs-tsm
// or /dev/tdx_guest.
func WithTDXQuoteProvider(qp tdxclient.QuoteProvider) Option {
	return func(o *options) { o.tdxQP = qp }
}

// WithTDXDevice makes the tdx attester's /dev/tdx_guest fallback use d.
func WithTDXDevice(d tdxclient.Device) Option { return func(o *options) { o.tdxDevice = d } }

// WithIMDS replaces the Azure instance metadata service base URL
// (http://169.254.169.254) and the client used to reach it.
func WithIMDS(baseURL string, c *http.Client) Option {
	return func(o *options) {
		o.imdsBase = baseURL
		if c != nil {
			o.imdsClient = c
		}
	}
}

// WithKDS replaces the AMD Key Distribution Service base URL used when a
// bare-metal SNP host does not provide its VCEK; "" disables the fetch (the
// evidence then has a null cert_chain and needs `verify --online`).
func WithKDS(baseURL string, c *http.Client) Option {
	return func(o *options) {
		o.kdsBase = baseURL
		if c != nil {
			o.kdsClient = c
		}
	}
}

// WithClock sets the clock (sim-snp certificate times are fixed; the clock
// only dates log lines and timeouts).
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithLogger sets the logger for warnings (insecure fallback, missing VCEK).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithHCLTimeout bounds how long az-tdx waits for the HCL report to carry the
// new report data after writing NV 0x01400002 (default 10 s), polling every
// poll.
func WithHCLTimeout(timeout, poll time.Duration) Option {
	return func(o *options) { o.hclTimeout, o.hclPoll = timeout, poll }
}

// WithCCELPath sets where the TDX event log is read from; "" leaves
// cc_eventlog out of tdx evidence.
func WithCCELPath(path string) Option { return func(o *options) { o.ccelPath = path } }
