package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/accessibility"
	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/kettle-build/kettle/bench/harness"
	"github.com/kettle-build/kettle/internal/testenv"
)

// The web page (docs/web.md) in a real browser: Debian's chromium, headless,
// driven over the DevTools protocol. Elements are found the way a person or
// a screen reader finds them: by role, accessible name and visible text.

// page is one browser tab on a kettle server, recording what it requests
// and every console error or uncaught exception.
type page struct {
	t      *testing.T
	ctx    context.Context
	origin string
	mu     sync.Mutex
	reqs   []string // "METHOD URL"
	errs   []string
	dlDone chan string // GUIDs of finished downloads
}

func newPage(t *testing.T, origin, downloads string) *page {
	t.Helper()
	bin := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			bin = p
			break
		}
	}
	testenv.Need(t, bin != "", "chromium is not installed (Debian package chromium; scripts/setup.sh installs it)")
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.DisableGPU,
		// Not TMPDIR: its profile is removed with the test.
		chromedp.UserDataDir(filepath.Join(t.TempDir(), "profile")),
		// Chromium puts its singleton socket directory in TMPDIR whatever
		// the profile: give it the test's own, which is removed with it.
		chromedp.Env("TMPDIR="+t.TempDir()),
		chromedp.WindowSize(1280, 1000),
		chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTime := context.WithTimeout(ctx, 4*time.Minute)
	t.Cleanup(func() { cancelTime(); cancelCtx(); cancelAlloc() })
	p := &page{t: t, ctx: ctx, origin: origin, dlDone: make(chan string, 4)}
	chromedp.ListenTarget(ctx, func(ev any) {
		p.mu.Lock()
		defer p.mu.Unlock()
		switch e := ev.(type) {
		case *network.EventRequestWillBeSent:
			p.reqs = append(p.reqs, e.Request.Method+" "+e.Request.URL)
		case *runtime.EventExceptionThrown:
			p.errs = append(p.errs, "exception: "+e.ExceptionDetails.Error())
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.APITypeError {
				var parts []string
				for _, a := range e.Args {
					parts = append(parts, string(a.Value))
				}
				p.errs = append(p.errs, "console.error: "+strings.Join(parts, " "))
			}
		case *browser.EventDownloadProgress:
			if e.State == browser.DownloadProgressStateCompleted {
				p.dlDone <- e.GUID
			}
		}
	})
	p.run(network.Enable(), runtime.Enable(),
		browser.SetDownloadBehavior(browser.SetDownloadBehaviorBehaviorAllowAndName).
			WithDownloadPath(downloads).WithEventsEnabled(true))
	return p
}

func (p *page) run(actions ...chromedp.Action) {
	p.t.Helper()
	if err := chromedp.Run(p.ctx, actions...); err != nil {
		p.t.Fatalf("browser: %v\nconsole errors: %v", err, p.errors())
	}
}

func (p *page) requests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.reqs...)
}

func (p *page) errors() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.errs...)
}

// eval runs a JavaScript expression in the page and decodes its value.
func (p *page) eval(js string, out any) {
	p.t.Helper()
	p.run(chromedp.Evaluate(js, out, func(e *runtime.EvaluateParams) *runtime.EvaluateParams {
		return e.WithAwaitPromise(true)
	}))
}

// waitJS polls a JavaScript condition until it is true.
func (p *page) waitJS(d time.Duration, what, cond string) {
	p.t.Helper()
	deadline := time.Now().Add(d)
	for {
		var ok bool
		p.eval("!!("+cond+")", &ok)
		if ok {
			return
		}
		if time.Now().After(deadline) {
			var body string
			p.eval("document.body.innerText", &body)
			p.t.Fatalf("timed out after %s waiting for %s; page text:\n%s\nconsole errors: %v", d, what, harness.Tail(body, 40), p.errors())
		}
		time.Sleep(150 * time.Millisecond)
	}
}

type axNode struct{ Role, Name string }

// axTree is the page's accessibility tree, as a screen reader sees it.
// Decoded into a struct of its own: cdproto's enums lag behind Chromium's.
func (p *page) axTree() []axNode {
	p.t.Helper()
	type value struct {
		Value any `json:"value"`
	}
	var res struct {
		Nodes []struct {
			Ignored bool   `json:"ignored"`
			Role    *value `json:"role"`
			Name    *value `json:"name"`
		} `json:"nodes"`
	}
	p.run(chromedp.ActionFunc(func(ctx context.Context) error {
		return cdp.Execute(ctx, accessibility.CommandGetFullAXTree, nil, &res)
	}))
	str := func(v *value) string {
		if v == nil {
			return ""
		}
		s, _ := v.Value.(string)
		return s
	}
	var out []axNode
	for _, n := range res.Nodes {
		if !n.Ignored {
			out = append(out, axNode{Role: str(n.Role), Name: str(n.Name)})
		}
	}
	return out
}

// needAX fails unless the tree has a node of role whose name contains name
// (case-insensitive).
func needAX(t *testing.T, tree []axNode, role, name string) {
	t.Helper()
	for _, n := range tree {
		if n.Role == role && strings.Contains(strings.ToLower(n.Name), strings.ToLower(name)) {
			return
		}
	}
	t.Errorf("no %s named like %q in the accessibility tree: %v", role, name, tree)
}

// Selectors a person would use: a labelled control inside the section
// whose heading says what it is for.
const (
	jsBuildForm  = `document.querySelector('section[aria-labelledby="build-title"] form')`
	jsVerifyForm = `document.querySelector('section[aria-labelledby="verify-title"] form')`
)

// control finds a form's control by the text of its label.
func control(form, label string) string {
	return fmt.Sprintf(`(() => { const f = %s; for (const l of f.querySelectorAll('label')) {
		if (l.innerText.toLowerCase().includes(%q)) { const c = l.control; if (c) return c; } } return null; })()`, form, strings.ToLower(label))
}

// button finds a form's button whose text starts with text.
func button(form, text string) string {
	return fmt.Sprintf(`[...%s.querySelectorAll('button')].find(b => b.innerText.trim().toLowerCase().startsWith(%q))`, form, strings.ToLower(text))
}

// verifyRows reads the verify area's result rows: name → "PASSED"/"FAILED".
func (p *page) verifyRows() map[string]string {
	p.t.Helper()
	var rows [][]string
	p.eval(`[...document.querySelectorAll('section[aria-labelledby="verify-title"] tbody tr')].map(tr => [...tr.cells].map(c => c.innerText))`, &rows)
	out := map[string]string{}
	for _, r := range rows {
		if len(r) < 2 {
			continue
		}
		verdict := "?"
		switch {
		case strings.Contains(r[0], "PASSED"):
			verdict = "PASSED"
		case strings.Contains(r[0], "FAILED"):
			verdict = "FAILED"
		}
		out[r[1]] = verdict
	}
	return out
}

// cliVerdicts is `kettle verify --json` on tarball: name → verdict.
func cliVerdicts(t *testing.T, tarball string, args ...string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(tarball)
	if err != nil {
		t.Fatal(err)
	}
	dir := extract(t, b)
	out, _ := exec.Command(kettleBin, append(append([]string{"verify", "--json"}, args...), dir)...).Output()
	var rep struct {
		Checks []struct {
			Name string `json:"name"`
			OK   bool   `json:"ok"`
		} `json:"checks"`
	}
	if err := json.Unmarshal(out, &rep); err != nil || len(rep.Checks) == 0 {
		t.Fatalf("kettle verify --json: %v\n%s", err, out)
	}
	v := map[string]string{}
	for _, c := range rep.Checks {
		verdict := "FAILED"
		if c.OK {
			verdict = "PASSED"
		}
		v[strings.ReplaceAll(c.Name, "`", "")] = verdict
	}
	return v
}

// verifyInPage runs the verify area on file (dropped on the drop zone, or
// chosen in the file input) and returns its rows and the requests the page
// made meanwhile.
func (p *page) verifyInPage(file, nonce string, insecure, drop bool) (map[string]string, []string) {
	p.t.Helper()
	p.run(chromedp.Navigate(p.origin + "/"))
	p.waitJS(10*time.Second, "the verify form", jsVerifyForm)
	before := len(p.requests())
	// The file input may be visually hidden; DevTools sets its files as
	// the chooser would.
	p.run(chromedp.SetUploadFiles(`section[aria-labelledby="verify-title"] input[type=file]`, []string{file}, chromedp.ByQuery))
	if drop {
		// Drop the same file on the zone that says "Drop", as a person
		// dragging it from their desktop would, after clearing the input.
		var ok bool
		p.eval(fmt.Sprintf(`(() => { const f = %s; const input = f.querySelector('input[type=file]');
			const file = input.files[0]; const dt = new DataTransfer(); dt.items.add(file);
			const zone = [...f.querySelectorAll('*')].find(e => e.children.length > 0 && /drop/i.test(e.innerText) && e.querySelector('input[type=file]'));
			const over = new DragEvent('dragover', {dataTransfer: dt, bubbles: true, cancelable: true});
			zone.dispatchEvent(over);
			if (!over.defaultPrevented) return false;
			zone.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
			return true; })()`, jsVerifyForm), &ok)
		if !ok {
			p.t.Fatal("the drop zone does not take a dragover (no preventDefault)")
		}
	}
	var ignored bool
	p.eval(fmt.Sprintf(`(() => { const n = %s; n.value = %q; n.dispatchEvent(new Event('input', {bubbles: true}));
		const c = %s; if (c.checked !== %v) c.click(); return true; })()`,
		control(jsVerifyForm, "nonce"), nonce, control(jsVerifyForm, "insecure"), insecure), &ignored)
	p.eval(button(jsVerifyForm, "verify")+".click(), true", &ignored)
	p.waitJS(30*time.Second, "the verification rows",
		`document.querySelectorAll('section[aria-labelledby="verify-title"] tbody tr').length > 0 && !`+button(jsVerifyForm, "verify")+`.disabled`)
	return p.verifyRows(), p.requests()[before:]
}

// TestWebPage submits a real build through the page, watches it, downloads
// the result, verifies it in the page (WebAssembly, no server involved) in
// the three cases of docs/web.md plus the peer's real bundle, and saves a
// screenshot of the finished job.
func TestWebPage(t *testing.T) {
	repo := serveRepo(t, "webpage", 0)
	_, c := server(t, "")
	harness.WaitReady(t, c)
	downloads := t.TempDir()
	p := newPage(t, c.URL, downloads)

	// The page at /: the build form and the verify area, named for people.
	p.run(chromedp.Navigate(c.URL + "/"))
	p.waitJS(10*time.Second, "the build form", jsBuildForm)
	tree := p.axTree()
	needAX(t, tree, "textbox", "repository url")
	needAX(t, tree, "textbox", "ref")
	needAX(t, tree, "textbox", "nonce")
	needAX(t, tree, "button", "build")
	needAX(t, tree, "button", "verify")
	needAX(t, tree, "checkbox", "insecure")
	var nonce string
	p.eval(control(jsBuildForm, "nonce")+".value", &nonce)
	if len(nonce) != 32 || strings.Trim(nonce, "0123456789abcdef") != "" {
		t.Fatalf("the build nonce is not prefilled with 16 random bytes: %q", nonce)
	}
	var ignored bool
	p.eval(fmt.Sprintf(`(() => { const u = %s; u.value = %q; return true; })()`, control(jsBuildForm, "repository url"), repo.URL), &ignored)
	p.eval(button(jsBuildForm, "build")+".click(), true", &ignored)
	p.waitJS(10*time.Second, "the job's page", `location.pathname.startsWith("/b/")`)
	var path string
	p.eval("location.pathname", &path)
	id, _ := url.PathUnescape(strings.TrimPrefix(path, "/b/"))

	// The job page: live log, state, phases; then Download.
	p.waitJS(2*time.Minute, "the state to say succeeded",
		`(document.querySelector('[role=status]')?.innerText || '').toLowerCase().includes('succeeded')`)
	st, err := c.Status(context.Background(), id)
	if err != nil || st["status"] != "succeeded" {
		t.Fatalf("the page says succeeded, the API %v (%v)", st["status"], err)
	}
	evs, err := c.Wait(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, e := range evs {
		var m struct{ Msg string }
		if json.Unmarshal([]byte(e.Data), &m) == nil && m.Msg != "" {
			want = append(want, m.Msg)
		}
	}
	logLines := func() []string {
		var lines []string
		p.eval(`[...document.querySelector('[role=log]').children].map(d => d.lastElementChild ? d.lastElementChild.innerText : d.innerText)`, &lines)
		return lines
	}
	if got := logLines(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("the page's log differs from the SSE log:\npage:\n%s\napi:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var phases string
	p.eval(`document.querySelector('[aria-label=Phases]').innerText`, &phases)
	for _, ph := range []string{"Init", "Detect", "Build", "Provenance", "Attest"} {
		if !strings.Contains(phases, ph) {
			t.Errorf("the finished job page does not name phase %s: %q", ph, phases)
		}
	}
	// The server's phase timings (GET /build/{id} phases), each listed.
	if ph, _ := st["phases"].([]any); len(ph) > 0 {
		p.waitJS(10*time.Second, "the phase timings", `!document.querySelector('[aria-label="Phase timings"]').hidden`)
		var timings string
		p.eval(`document.querySelector('[aria-label="Phase timings"]').innerText`, &timings)
		for _, x := range ph {
			if m, _ := x.(map[string]any); m != nil {
				if name, _ := m["name"].(string); !strings.Contains(timings, name) {
					t.Errorf("the job page's timings lack phase %q: %q", name, timings)
				}
			}
		}
	} else if testenv.CI() {
		t.Errorf("GET /build/{id} has no phases: %v", st)
	}
	shot := filepath.Join(t.TempDir(), "job.png")
	var png []byte
	p.run(chromedp.FullScreenshot(&png, 100)) // quality 100: PNG
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	if out := os.Getenv("KETTLE_SCREENSHOT"); out != "" {
		os.WriteFile(out, png, 0o644)
	}
	t.Logf("screenshot of the finished job: %s (%d bytes)", shot, len(png))
	// The job page as a screen reader finds it (docs/web-ui.md).
	tree = p.axTree()
	needAX(t, tree, "log", "")
	needAX(t, tree, "status", "")
	needAX(t, tree, "list", "phases")
	needAX(t, tree, "link", "download")

	p.eval(`[...document.querySelectorAll('a[href]')].find(a => a.innerText.toLowerCase().includes('download')).click(), true`, &ignored)
	var guid string
	select {
	case guid = <-p.dlDone:
	case <-time.After(20 * time.Second):
		t.Fatal("clicking Download downloaded nothing within 20 s")
	}
	got, err := os.ReadFile(filepath.Join(downloads, guid))
	if err != nil {
		t.Fatal(err)
	}
	result, _ := download(t, c, id)
	if !bytes.Equal(got, result) {
		t.Fatalf("the downloaded file (%d bytes) differs from GET /build/{id}/result (%d bytes)", len(got), len(result))
	}

	// Reloading after the end replays the whole log, once.
	p.run(chromedp.Reload())
	p.waitJS(30*time.Second, "the replayed log",
		fmt.Sprintf(`document.querySelector('[role=log]').children.length >= %d && (document.querySelector('[role=status]')?.innerText || '').toLowerCase().includes('succeeded')`, len(want)))
	time.Sleep(500 * time.Millisecond)
	if got := logLines(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("after a reload the page's log differs from the SSE log (%d lines, want %d)", len(got), len(want))
	}

	// The verify area, against `kettle verify --json` on the same tarball.
	tarball := filepath.Join(t.TempDir(), "result.tar.gz")
	if err := os.WriteFile(tarball, result, 0o644); err != nil {
		t.Fatal(err)
	}
	wrong := strings.Repeat("ab", 16)
	for _, tc := range []struct {
		name     string
		nonce    string
		insecure bool
		drop     bool
		failed   []string // substrings of the rows that must fail; nil: all pass
	}{
		{"right nonce, insecure allowed", nonce, true, false, nil},
		{"wrong nonce, dropped", wrong, true, true, []string{"Nonce"}},
		{"insecure not allowed", nonce, false, false, []string{"Evidence"}},
	} {
		func() {
			rows, reqs := p.verifyInPage(tarball, tc.nonce, tc.insecure, tc.drop)
			args := []string{"--nonce", tc.nonce}
			if tc.insecure {
				args = append(args, "--allow-insecure")
			}
			cli := cliVerdicts(t, tarball, args...)
			if fmt.Sprint(rows) != fmt.Sprint(cli) {
				t.Errorf("%s: the page's verdicts differ from kettle verify --json:\npage: %v\ncli:  %v", tc.name, rows, cli)
			}
			var failed []string
			for name, v := range rows {
				if v == "FAILED" {
					failed = append(failed, name)
				}
			}
			if tc.failed == nil && len(failed) > 0 {
				t.Errorf("%s: rows failed: %v", tc.name, failed)
			}
			for _, f := range tc.failed {
				found := false
				for _, name := range failed {
					found = found || strings.Contains(name, f)
				}
				if !found {
					t.Errorf("%s: no row about %q failed: %v", tc.name, f, rows)
				}
			}
			checkVerifyRequests(t, c.URL, reqs)
		}()
	}

	// The peer's real bundle (az-snp evidence from real hardware).
	peer := peerTarball(t)
	rows, reqs := p.verifyInPage(peer, strings.Repeat("00", 16), false, false)
	cli := cliVerdicts(t, peer, "--nonce", strings.Repeat("00", 16))
	if fmt.Sprint(rows) != fmt.Sprint(cli) {
		t.Errorf("peer bundle: the page's verdicts differ from kettle verify --json:\npage: %v\ncli:  %v", rows, cli)
	}
	for name, v := range rows {
		if v != "PASSED" {
			t.Errorf("peer bundle: %s %s", name, v)
		}
	}
	checkVerifyRequests(t, c.URL, reqs)
	tree = p.axTree()
	needAX(t, tree, "table", "checks")
	needAX(t, tree, "row", "")
	needAX(t, tree, "columnheader", "check")
	needAX(t, tree, "cell", "passed")

	// A build that fails: the page shows its error type and message as
	// GET /build/{id} gives them, outside the log.
	p.run(chromedp.Navigate(c.URL + "/"))
	p.waitJS(10*time.Second, "the build form", jsBuildForm)
	p.eval(fmt.Sprintf(`(() => { const u = %s; u.value = %q; return true; })()`, control(jsBuildForm, "repository url"),
		strings.TrimSuffix(repo.URL, "webpage.git")+"no-such-project.git"), &ignored)
	p.eval(button(jsBuildForm, "build")+".click(), true", &ignored)
	p.waitJS(10*time.Second, "the failed job's page", `location.pathname.startsWith("/b/")`)
	p.eval("location.pathname", &path)
	failedID, _ := url.PathUnescape(strings.TrimPrefix(path, "/b/"))
	p.waitJS(time.Minute, "the state to say failed",
		`(document.querySelector('[role=status]')?.innerText || '').toLowerCase().includes('failed')`)
	st, err = c.Status(context.Background(), failedID)
	if err != nil || st["status"] != "failed" {
		t.Fatalf("failed job: API says %v (%v)", st["status"], err)
	}
	var outside string
	p.eval(`(() => { const c = document.querySelector('section[aria-labelledby="job-title"]').cloneNode(true);
		c.querySelector('[role=log]').remove(); return c.innerText; })()`, &outside)
	for _, k := range []string{"error_type", "error"} {
		if v, _ := st[k].(string); v == "" || !strings.Contains(outside, v) {
			t.Errorf("the failed job's page does not show %s %q outside the log:\n%s", k, v, outside)
		}
	}

	for _, r := range p.requests() {
		_, u, _ := strings.Cut(r, " ")
		if !strings.HasPrefix(u, c.URL+"/") && !strings.HasPrefix(u, "blob:") && !strings.HasPrefix(u, "data:") {
			t.Errorf("the page requested another origin: %s", r)
		}
	}
	if errs := p.errors(); len(errs) > 0 {
		t.Errorf("console errors or uncaught exceptions: %v", errs)
	}
}

// checkVerifyRequests: while verifying, only the page's own static assets.
func checkVerifyRequests(t *testing.T, origin string, reqs []string) {
	t.Helper()
	for _, r := range reqs {
		method, u, _ := strings.Cut(r, " ")
		if strings.HasPrefix(u, "blob:") || strings.HasPrefix(u, "data:") {
			continue
		}
		path := strings.TrimPrefix(u, origin)
		static := false
		for _, ext := range []string{".wasm", ".js", ".mjs", ".css", ".map"} {
			static = static || strings.HasSuffix(path, ext)
		}
		if method != "GET" || !strings.HasPrefix(u, origin+"/") || strings.HasPrefix(path, "/build") || !static {
			// Navigating to / to open the verify area is not part of
			// verifying.
			if path == "/" && method == "GET" {
				continue
			}
			t.Errorf("request while verifying: %s", r)
		}
	}
}

// peerTarball packs the peer's real result bundle (verify/testdata) as a
// result tarball.
func peerTarball(t *testing.T) string {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(root, "verify", "testdata", "kettle-v1", "kex")
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == src {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = "kettle-build/" + filepath.ToSlash(rel)
		if d.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !d.IsDir() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			_, err = tw.Write(b)
			return err
		}
		return nil
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = zw.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "kex.tar.gz")
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// dropFirstStream proxies to kettle and cuts the first event stream after
// two events, as a dropped connection would.
type dropFirstStream struct {
	next    http.Handler
	mu      sync.Mutex
	streams []string // the Last-Event-ID of each /events request
}

func (d *dropFirstStream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasSuffix(r.URL.Path, "/events") {
		d.next.ServeHTTP(w, r)
		return
	}
	d.mu.Lock()
	d.streams = append(d.streams, r.Header.Get("Last-Event-ID"))
	first := len(d.streams) == 1
	d.mu.Unlock()
	if !first {
		d.next.ServeHTTP(w, r)
		return
	}
	d.next.ServeHTTP(&cutWriter{ResponseWriter: w, left: 2}, r)
}

// cutWriter aborts the response once left events have gone out.
type cutWriter struct {
	http.ResponseWriter
	left int
	from int // where the current block starts in this write
}

func (c *cutWriter) Write(b []byte) (int, error) {
	// Count events with an id (not comments), so the browser has an id
	// to resume from.
	for i := 0; i+1 < len(b); i++ {
		if b[i] == '\n' && b[i+1] == '\n' && bytes.Contains(b[c.from:i], []byte("id: ")) {
			if c.left--; c.left == 0 {
				c.ResponseWriter.Write(b[:i+2])
				c.Flush()
				// Let the browser take those events in before the
				// connection goes, so it has an id to resume from
				// even on a loaded machine.
				time.Sleep(300 * time.Millisecond)
				panic(http.ErrAbortHandler) // the connection drops mid-log
			}
		}
		if b[i] == '\n' && b[i+1] == '\n' {
			c.from = i + 2
		}
	}
	c.from = 0
	return c.ResponseWriter.Write(b)
}

func (c *cutWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// TestWebPageResume: the job page's log resumes after a dropped event
// stream (Last-Event-ID) and shows every line exactly once.
func TestWebPageResume(t *testing.T) {
	repo := serveRepo(t, "webresume", 0)
	_, c := server(t, "")
	harness.WaitReady(t, c)
	ctx := context.Background()
	id, err := c.Submit(ctx, harness.BuildRequest{Nonce: harness.NewNonce(), RepoURL: repo.URL})
	if err != nil {
		t.Fatal(err)
	}
	evs, err := c.Wait(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, e := range evs {
		var m struct{ Msg string }
		if json.Unmarshal([]byte(e.Data), &m) == nil && m.Msg != "" {
			want = append(want, m.Msg)
		}
	}
	target, err := url.Parse(c.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.FlushInterval = -1
	drop := &dropFirstStream{next: rp}
	front := httptest.NewServer(drop)
	t.Cleanup(front.Close)

	p := newPage(t, front.URL, t.TempDir())
	p.run(chromedp.Navigate(front.URL + "/b/" + url.PathEscape(id)))
	// The JSON may say succeeded before the stream has resumed: wait for
	// the log's last line (the browser retries after about 3 s).
	p.waitJS(30*time.Second, "the whole log after the drop",
		fmt.Sprintf(`document.querySelector('[role=log]').children.length >= %d`, len(want)))
	var got []string
	p.eval(`[...document.querySelector('[role=log]').children].map(d => d.lastElementChild ? d.lastElementChild.innerText : d.innerText)`, &got)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("after a drop the page's log differs from the SSE log:\npage:\n%s\napi:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	drop.mu.Lock()
	streams := append([]string(nil), drop.streams...)
	drop.mu.Unlock()
	if len(streams) < 2 || streams[1] == "" {
		t.Errorf("the page did not resume with Last-Event-ID after the drop: %q", streams)
	}
	if errs := p.errors(); len(errs) > 0 {
		t.Errorf("console errors: %v", errs)
	}

	// An id that looks like a path stays one path segment: the page asks
	// for that job, never another path (docs/security/web.md).
	odd := "../x?y#z"
	p.run(chromedp.Navigate(front.URL + "/b/" + url.PathEscape(odd)))
	p.waitJS(10*time.Second, "the odd id's page", `(document.querySelector('[role=status]')?.innerText || '').includes('unknown')`)
	found := false
	for _, r := range p.requests() {
		if strings.HasPrefix(r, "GET "+front.URL+"/build/") {
			if !strings.HasPrefix(r, "GET "+front.URL+"/build/"+url.PathEscape(id)) {
				if r != "GET "+front.URL+"/build/"+url.PathEscape(odd) {
					t.Errorf("the page asked for %q", r)
				}
				found = true
			}
		}
	}
	if !found {
		t.Errorf("the odd id's page made no request for it: %q", p.requests())
	}
}

// postRecorder proxies to kettle and keeps the bodies of POST /build.
type postRecorder struct {
	next   http.Handler
	mu     sync.Mutex
	bodies [][]byte
}

func (p *postRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && r.URL.Path == "/build" {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		p.mu.Lock()
		p.bodies = append(p.bodies, b)
		p.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(b))
	}
	p.next.ServeHTTP(w, r)
}

// TestWebPageArchive: a tar.gz dropped on the build form is sent as
// {nonce, source_data, source_name} with the nonce the form shows, and
// builds.
func TestWebPageArchive(t *testing.T) {
	src := t.TempDir()
	project(t, src, "webarchive", 0)
	data := harness.Targz(t, src, "webarchive")
	_, c := server(t, "")
	harness.WaitReady(t, c)
	target, err := url.Parse(c.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	// A server that times its phases (issue 16) adds `phases` to
	// GET /build/{id}; the page lists them, and one without them is the
	// other tests.
	rp.ModifyResponse = func(resp *http.Response) error {
		r := resp.Request
		if r.Method != http.MethodGet || !strings.HasPrefix(r.URL.Path, "/build/") || strings.Count(r.URL.Path, "/") != 2 || resp.StatusCode != 200 {
			return nil
		}
		var j map[string]any
		b, err := io.ReadAll(resp.Body)
		if err != nil || json.Unmarshal(b, &j) != nil {
			return fmt.Errorf("job JSON: %v", err)
		}
		j["phases"] = []map[string]any{{"name": "fetch", "start": "2026-01-01T00:00:00Z", "duration": 0.25}, {"name": "pack", "duration": "12ms"}, {"bogus": 1}}
		b, _ = json.Marshal(j)
		resp.Body = io.NopCloser(bytes.NewReader(b))
		resp.ContentLength = int64(len(b))
		resp.Header.Del("Content-Length")
		return nil
	}
	rec := &postRecorder{next: rp}
	front := httptest.NewServer(rec)
	t.Cleanup(front.Close)

	p := newPage(t, front.URL, t.TempDir())
	p.run(chromedp.Navigate(front.URL + "/"))
	p.waitJS(10*time.Second, "the build form", jsBuildForm)
	var nonce string
	p.eval(control(jsBuildForm, "nonce")+".value", &nonce)
	// Dropped on the zone that says "Drop", as from a desktop (choosing it
	// goes through the same handler: the verify tests choose).
	var dropped bool
	p.eval(fmt.Sprintf(`(() => { const f = %s;
		const bytes = Uint8Array.from(atob(%q), (c) => c.charCodeAt(0));
		const dt = new DataTransfer(); dt.items.add(new File([bytes], "webarchive.tar.gz", {type: "application/gzip"}));
		const zone = [...f.querySelectorAll('*')].find(e => e.children.length > 0 && /drop/i.test(e.innerText) && e.querySelector('input[type=file]'));
		if (!zone) return false;
		const over = new DragEvent('dragover', {dataTransfer: dt, bubbles: true, cancelable: true});
		zone.dispatchEvent(over);
		if (!over.defaultPrevented) return false;
		zone.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
		return true; })()`, jsBuildForm, base64.StdEncoding.EncodeToString(data)), &dropped)
	if !dropped {
		t.Fatal("the build form has no drop zone that takes a dragover")
	}
	var ignored bool
	p.eval(button(jsBuildForm, "build")+".click(), true", &ignored)
	p.waitJS(10*time.Second, "the job's page", `location.pathname.startsWith("/b/")`)
	p.waitJS(2*time.Minute, "the state to say succeeded",
		`(document.querySelector('[role=status]')?.innerText || '').toLowerCase().includes('succeeded')`)

	p.waitJS(10*time.Second, "the phase timings",
		`(document.querySelector('[aria-label="Phase timings"]')?.innerText || '').includes('fetch 0.250 s')`)
	var timings string
	p.eval(`document.querySelector('[aria-label="Phase timings"]').innerText`, &timings)
	if !strings.Contains(timings, "pack 12ms") || strings.Contains(timings, "bogus") {
		t.Errorf("phase timings: %q", timings)
	}

	rec.mu.Lock()
	bodies := rec.bodies
	rec.mu.Unlock()
	if len(bodies) != 1 {
		t.Fatalf("%d POST /build, want 1", len(bodies))
	}
	var req map[string]any
	if err := json.Unmarshal(bodies[0], &req); err != nil {
		t.Fatal(err)
	}
	if req["nonce"] != nonce || req["source_name"] != "webarchive.tar.gz" || req["source_data"] != base64.StdEncoding.EncodeToString(data) {
		t.Errorf("the form sent nonce %v (shown %q), source_name %v, %d bytes of source_data", req["nonce"], nonce, req["source_name"], len(fmt.Sprint(req["source_data"])))
	}
	if _, ok := req["repo_url"]; ok {
		t.Errorf("an archive build also sent repo_url %v", req["repo_url"])
	}
	if errs := p.errors(); len(errs) > 0 {
		t.Errorf("console errors: %v", errs)
	}
}
