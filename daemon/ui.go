package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"time"

	"github.com/netshape/netshape/control"
	"github.com/netshape/netshape/flow"
	"github.com/netshape/netshape/policy"
	"github.com/netshape/netshape/store"
	"github.com/netshape/netshape/ui"
)

// uiState is the dashboard (when --ui) and the rate tracker behind it and
// behind /metrics (always).
type uiState struct {
	tracker *ui.Tracker
	srv     *ui.Server
}

// uiSampleEvery is how often the tracker samples the flows; the proxy keeps
// the last 1000 closed flows, so short flows are not missed between samples.
const uiSampleEvery = time.Second

// uiRoutes creates the tracker and serves /metrics on the control socket.
func (d *Daemon) uiRoutes() {
	d.ui.tracker = ui.NewTracker(ui.TrackerOptions{})
	d.ctl.HandleRaw("GET /metrics", ui.MetricsHandler(uiBackend{d}, d.ui.tracker))
}

// listenUI binds the dashboard's address when --ui asks for it, before the
// redirect rules go in, so a bad address fails the start cleanly.
func (d *Daemon) listenUI() error {
	if d.cfg.UI == "" {
		return nil
	}
	tokPath := filepath.Join(d.cfg.StateDir, ui.TokenFile)
	tok, err := ui.LoadOrCreateToken(tokPath)
	if err != nil {
		return err
	}
	srv, err := ui.NewServer(ui.Config{Addr: d.cfg.UI, AllowRemote: d.cfg.UIAllowRemote, Token: tok,
		Backend: uiBackend{d}, Tracker: d.ui.tracker, Logger: d.log.With("component", "ui")})
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	d.ui.srv = srv
	d.log.Info("dashboard: open this URL (the token is also in "+tokPath+")", "url", srv.URL())
	return nil
}

// startUI samples flows for rates and /metrics, and serves the dashboard if
// it listens, until ctx ends.
func (d *Daemon) startUI(ctx context.Context) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		t := time.NewTicker(uiSampleEvery)
		defer t.Stop()
		d.ui.tracker.Sample(time.Now(), d.proxy.Flows(true))
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				d.ui.tracker.Sample(now, d.proxy.Flows(true))
			}
		}
	}()
	if d.ui.srv == nil {
		return
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := d.ui.srv.Serve(); err != nil {
			d.warn("dashboard stopped: " + err.Error())
		}
	}()
	context.AfterFunc(ctx, func() { d.ui.srv.Close() })
}

// closeUI stops the dashboard; it is idempotent.
func (d *Daemon) closeUI() {
	if d.ui.srv != nil {
		d.ui.srv.Close()
	}
}

// uiBackend gives the dashboard the same data and actions as the control API.
type uiBackend struct{ d *Daemon }

func (b uiBackend) Status() control.Status { return b.d.status() }

func (b uiBackend) Flows(closed bool) []flow.Flow { return b.d.proxy.Flows(closed) }

func (b uiBackend) Pending() []control.Pending { return b.d.prompts.list() }

func (b uiBackend) Answer(id int64, a control.Answer) (control.AnswerResult, error) {
	res, err := b.d.prompts.answer(id, a)
	switch {
	case errors.Is(err, ErrNoPending):
		return res, fmt.Errorf("%w: %w", ui.ErrNotFound, err)
	case err != nil:
		return res, fmt.Errorf("%w: %w", ui.ErrBadRequest, err)
	}
	return res, nil
}

func (b uiBackend) Rules() []policy.Rule { return b.d.rules.Load().all }

func (b uiBackend) Quotas() []ui.Quota { return b.d.quotaViews() }

func (b uiBackend) Usage(v url.Values) ([]store.UsageTotal, error) {
	q, err := usageQuery(&http.Request{URL: &url.URL{RawQuery: v.Encode()}})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ui.ErrBadRequest, err)
	}
	b.d.flushUsage(time.Now())
	return b.d.store.Usage(q)
}

func (b uiBackend) Iface() (control.IfaceReport, error) { return b.d.ifaceReport() }
