package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/netshape/netshape/flow"
	"github.com/netshape/netshape/internal/nstest"
)

const uiPort = 9050

// chromiumPath finds Chromium, installing Debian's package when missing and
// root; "" when it cannot be had.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, n := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	if os.Geteuid() != 0 {
		return ""
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return ""
	}
	t.Log("installing chromium with apt-get (excluded from the test time budget)")
	cmd := exec.Command("apt-get", "install", "-y", "--no-install-recommends", "chromium")
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Logf("apt-get install chromium: %v\n%s", err, out)
		return ""
	}
	p, _ := exec.LookPath("chromium")
	return p
}

// nsHTTP makes an HTTP client whose connections are dialed inside ns.
func nsHTTP(ns string) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := nstest.Do(ns, func() error {
				var err error
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}}
}

// forward listens on host loopback and relays each connection to addr
// inside namespace ns (the test drives Chromium's DevTools port this way).
func forward(t *testing.T, ns, addr string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var up net.Conn
				if err := nstest.Do(ns, func() error {
					var err error
					up, err = net.DialTimeout("tcp", addr, 5*time.Second)
					return err
				}); err != nil {
					return
				}
				defer up.Close()
				go io.Copy(up, c)
				io.Copy(c, up)
			}()
		}
	}()
	return l.Addr().String()
}

func TestDashboardInChromium(t *testing.T) {
	e := newEnv(t)
	chrome := chromiumPath(t)
	if chrome == "" {
		t.Skip("needs Chromium: install the Debian package chromium (apt-get install chromium) or run as root so the test can")
	}

	// A non-loopback address is refused before anything is installed.
	if out, err := exec.Command(nsBin, "start", "--socket", e.socket, "--state-dir", e.stateDir, "--ui", "0.0.0.0:9050").CombinedOutput(); err == nil ||
		!strings.Contains(string(out), "--ui-allow-remote") {
		t.Fatalf("start --ui 0.0.0.0:9050 without --ui-allow-remote: %v %s", err, out)
	}

	e.start("--ui", fmt.Sprintf("127.0.0.1:%d", uiPort), "--default", "ask", "--prompt-timeout", "60s")
	tokPath := filepath.Join(e.stateDir, "ui.token")
	st, err := os.Stat(tokPath)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", st, err)
	}
	b, _ := os.ReadFile(tokPath)
	tok := strings.TrimSpace(string(b))
	if !strings.Contains(e.log.String(), "?token="+tok) {
		t.Fatalf("start did not log the dashboard URL:\n%s", e.log)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", uiPort)
	hc := nsHTTP(e.Cli)
	if resp, err := hc.Get(base + "/api/live"); err != nil || resp.StatusCode != 401 {
		t.Fatalf("dashboard API without token: %v %v", resp, err)
	}
	req, _ := http.NewRequest("GET", base+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := hc.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("metrics with token: %v %v", resp, err)
	}
	resp.Body.Close()
	if m := e.mustNetshape("--socket", e.socket, "status"); m == "" {
		t.Fatal("no status")
	}

	// A client in the namespace asks for a long, paced download; the
	// default action holds it until someone answers.
	dst := netip.AddrPortFrom(nstest.SrvV4, 8080)
	dataServer(t, listen(t, e.Srv, dst))
	var got atomic.Int64
	clientDone := make(chan error, 1)
	go func() {
		c, err := dial(e.Cli, dst)
		if err != nil {
			clientDone <- err
			return
		}
		defer c.Close()
		request(c, 'D', 1<<40)
		buf := make([]byte, 64<<10)
		for got.Load() < 400<<20 {
			c.SetReadDeadline(time.Now().Add(90 * time.Second))
			n, err := c.Read(buf)
			got.Add(int64(n))
			if err != nil {
				clientDone <- err
				return
			}
			time.Sleep(10 * time.Millisecond) // about 6 MB/s
		}
		clientDone <- nil
	}()

	// Chromium runs inside the client namespace, where the dashboard is
	// on 127.0.0.1; its DevTools port is reached through a forwarder.
	userDir := t.TempDir()
	cmd := exec.Command("ip", "netns", "exec", e.Cli, chrome, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
		"--user-data-dir="+userDir, "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=9222",
		"--window-size=1280,1000", "about:blank")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var clog strings.Builder
	cmd.Stdout, cmd.Stderr = &clog, &clog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	})
	devtools := forward(t, e.Cli, "127.0.0.1:9222")
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, err := http.Get("http://" + devtools + "/json/version")
		if err == nil {
			r.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("chromium's DevTools did not come up: %v\n%s", err, clog.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	actx, cancelA := chromedp.NewRemoteAllocator(context.Background(), "ws://"+devtools+"/")
	defer cancelA()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 45*time.Second)
	defer cancelT()

	allow := `#pending tbody tr[id^="pending-"] button[data-action="allow"]`
	app := `#apps tbody tr[data-name="e2e.test"]`
	var appRow, rates, title string
	err = chromedp.Run(ctx,
		chromedp.Navigate(base+"/?token="+tok),
		chromedp.WaitVisible(allow),
		chromedp.Title(&title),
		chromedp.Click(allow),
		chromedp.WaitVisible(app),
		chromedp.Text(app, &appRow),
		chromedp.Text("#rates", &rates),
	)
	if err != nil {
		t.Fatalf("dashboard in chromium: %v\nclient got %d bytes\ndaemon log:\n%s", err, got.Load(), e.log)
	}
	if title != "netshape" || !strings.Contains(appRow, "e2e.test") || !strings.Contains(rates, "in ") {
		t.Fatalf("title %q, app row %q, rates %q", title, appRow, rates)
	}
	// The click released the held connection.
	deadline = time.Now().Add(10 * time.Second)
	for got.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got.Load() == 0 {
		t.Fatal("the connection stayed held after the click")
	}
	if p := os.Getenv("NETSHAPE_UI_SCREENSHOT"); p != "" {
		var png []byte
		if err := chromedp.Run(ctx, chromedp.Sleep(4*time.Second), chromedp.FullScreenshot(&png, 100)); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-clientDone:
		if err != nil && !errors.Is(err, io.EOF) {
			t.Logf("client ended: %v", err)
		}
	default:
	}
	// /metrics on the control socket counts the flow under its app.
	uc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", e.socket)
	}}}
	// The dashboard's tracker samples flows once a second: poll.
	var mb []byte
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		mr, err := uc.Get("http://netshape/metrics")
		if err != nil {
			t.Fatal(err)
		}
		mb, _ = io.ReadAll(mr.Body)
		mr.Body.Close()
		if strings.Contains(string(mb), `netshape_app_bytes_total{app="e2e.test",direction="in"}`) {
			break
		}
	}
	if !strings.Contains(string(mb), `netshape_app_bytes_total{app="e2e.test",direction="in"}`) || !strings.Contains(string(mb), "netshape_flows_total 1") {
		t.Errorf("control socket /metrics lacks the flow:\n%s", mb)
	}
	// Chromium talked to nothing but the dashboard: no proxied flow is its.
	var fs []flow.Flow
	if err := json.Unmarshal([]byte(e.mustNetshape("flows", "--closed", "--json")), &fs); err != nil {
		t.Fatal(err)
	}
	for _, f := range fs {
		if strings.Contains(f.App(), "chrom") {
			t.Errorf("chromium made a connection: %+v", f)
		}
	}
}
