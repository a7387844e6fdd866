package daemon

import (
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/netshape/netshape/control"
)

// hub fans events out to the clients of GET /v1/events. A client too slow to
// keep up loses events rather than slowing the daemon; it re-reads
// /v1/pending when it reconnects.
type hub struct {
	mu   sync.Mutex
	subs map[chan control.Event]struct{}
}

func newHub() *hub { return &hub{subs: map[chan control.Event]struct{}{}} }

func (h *hub) publish(e control.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.subs {
		select {
		case c <- e:
		default:
		}
	}
}

func (h *hub) subscribe() (chan control.Event, func()) {
	c := make(chan control.Event, 256)
	h.mu.Lock()
	h.subs[c] = struct{}{}
	h.mu.Unlock()
	return c, func() {
		h.mu.Lock()
		delete(h.subs, c)
		h.mu.Unlock()
	}
}

// serveEvents streams events as JSON lines: first "hello" and every pending
// item, then events as they happen, with a keep-alive every 15 s.
func (d *Daemon) serveEvents(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	c, cancel := d.events.subscribe()
	defer cancel()
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	enc.Encode(control.Event{Type: "hello", Time: time.Now(), Message: d.cfg.Version})
	for _, p := range d.prompts.list() {
		enc.Encode(control.Event{Type: "pending", Pending: &p, Time: time.Now()})
	}
	fl.Flush()
	tick := time.NewTicker(15 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-d.stopc:
			return
		case e := <-c:
			if enc.Encode(e) != nil {
				return
			}
		case <-tick.C:
			if enc.Encode(control.Event{Type: "keepalive", Time: time.Now()}) != nil {
				return
			}
		}
		fl.Flush()
	}
}
