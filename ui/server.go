package ui

import (
	"bytes"
	"context"
	"embed"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/netshape/netshape/control"
	"github.com/netshape/netshape/store"
)

//go:embed assets
var assets embed.FS

// Config configures a Server.
type Config struct {
	Addr        string // HOST:PORT; see CheckAddr
	AllowRemote bool
	Token       string // see LoadOrCreateToken
	Backend     Backend
	Tracker     *Tracker
	Logger      *slog.Logger
}

// Server serves the dashboard, its JSON API and /metrics.
type Server struct {
	b           Backend
	t           *Tracker
	token       string
	allowRemote bool
	addr        string
	log         *slog.Logger
	mux         *http.ServeMux
	index       *template.Template
	static      fs.FS
	ln          net.Listener
	srv         *http.Server
}

// NewServer checks cfg and returns a server that is not yet listening.
func NewServer(cfg Config) (*Server, error) {
	if err := CheckAddr(cfg.Addr, cfg.AllowRemote); err != nil {
		return nil, err
	}
	if !validToken(cfg.Token) {
		return nil, errors.New("dashboard token missing or malformed: make it with LoadOrCreateToken")
	}
	if cfg.Backend == nil || cfg.Tracker == nil {
		return nil, errors.New("dashboard needs a backend and a tracker")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	static, err := fs.Sub(assets, "assets")
	if err != nil {
		return nil, err
	}
	idx, err := template.ParseFS(static, "index.html")
	if err != nil {
		return nil, fmt.Errorf("dashboard page: %w", err)
	}
	s := &Server{b: cfg.Backend, t: cfg.Tracker, token: cfg.Token, allowRemote: cfg.AllowRemote, addr: cfg.Addr,
		log: cfg.Logger, mux: http.NewServeMux(), index: idx, static: static}
	s.routes()
	return s, nil
}

// Listen binds the address.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("dashboard: listen on %s: %w (choose another --ui address)", s.addr, err)
	}
	s.ln = ln
	// Built here, not in Serve, so that Close (from another goroutine) never
	// races with Serve's start.
	s.srv = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	return nil
}

// Addr is the bound address (after Listen).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// URL is the address to open, with the token.
func (s *Server) URL() string {
	a := s.addr
	if s.ln != nil {
		a = s.ln.Addr().String()
	}
	return "http://" + a + "/?token=" + s.token
}

// Serve answers requests until Close.
func (s *Server) Serve() error {
	err := s.srv.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops the server; it is idempotent.
func (s *Server) Close() error {
	if s.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := s.srv.Shutdown(ctx); err != nil {
			s.srv.Close()
		}
	}
	if s.ln != nil {
		s.ln.Close() // Shutdown closes it only once Serve has taken it
	}
	return nil
}

// Handler is the whole server: security headers, host and token checks, then
// the routes.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cache-Control", "no-store")
		if !s.hostOK(r) {
			http.Error(w, "netshape dashboard: open it as http://127.0.0.1:PORT/ (unexpected Host header)", http.StatusMisdirectedRequest)
			return
		}
		// The token in the URL logs in: it becomes a cookie and leaves the address bar.
		if q := r.URL.Query().Get("token"); q != "" && r.Method == http.MethodGet {
			if !s.tokenOK(q) {
				s.unauthorized(w, r)
				return
			}
			http.SetCookie(w, &http.Cookie{Name: cookieName, Value: s.token, Path: "/", HttpOnly: true,
				SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
			u := *r.URL
			v := u.Query()
			v.Del("token")
			u.RawQuery = v.Encode()
			http.Redirect(w, r, u.RequestURI(), http.StatusSeeOther)
			return
		}
		if t, _ := requestToken(r); !s.tokenOK(t) {
			s.unauthorized(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if err := s.sameOrigin(r); err != nil {
				s.log.Warn("dashboard request refused", "path", r.URL.Path, "remote", r.RemoteAddr, "why", err)
				writeJSON(w, http.StatusForbidden, map[string]string{"error": err.Error()})
				return
			}
		}
		s.mux.ServeHTTP(w, r)
	})
}

func (s *Server) unauthorized(w http.ResponseWriter, r *http.Request) {
	s.log.Debug("dashboard request without a valid token", "path", r.URL.Path, "remote", r.RemoteAddr)
	w.Header().Set("WWW-Authenticate", `Bearer realm="netshape"`)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusUnauthorized)
	fmt.Fprintln(w, "netshape dashboard: a token is needed. Open the URL `netshape start --ui` logged "+
		"(http://HOST:PORT/?token=...), or read the token from ui.token in the state directory.")
}

func (s *Server) routes() {
	s.mux.HandleFunc("GET /{$}", s.serveIndex)
	s.mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(s.static)))
	s.mux.Handle("GET /metrics", MetricsHandler(s.b, s.t))
	s.api("GET /api/live", func(r *http.Request) (any, error) {
		return s.t.Live(r.URL.Query().Get("history") != ""), nil
	})
	s.api("GET /api/status", func(r *http.Request) (any, error) { return s.b.Status(), nil })
	s.api("GET /api/pending", func(r *http.Request) (any, error) { return nonNil(s.b.Pending()), nil })
	s.api("POST /api/pending/{id}", func(r *http.Request) (any, error) {
		id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: pending id %q is not a number", ErrBadRequest, r.PathValue("id"))
		}
		var a control.Answer
		dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&a); err != nil {
			return nil, fmt.Errorf("%w: answer body: %v", ErrBadRequest, err)
		}
		if a.Action != "allow" && a.Action != "deny" {
			return nil, fmt.Errorf("%w: action %q: use allow or deny", ErrBadRequest, a.Action)
		}
		res, err := s.b.Answer(id, a)
		if err == nil {
			s.log.Info("dashboard answered", "id", id, "action", a.Action, "always", a.Always, "released", res.Released)
		}
		return res, err
	})
	s.api("GET /api/rules", func(r *http.Request) (any, error) { return nonNil(s.b.Rules()), nil })
	s.api("GET /api/quotas", func(r *http.Request) (any, error) { return nonNil(s.b.Quotas()), nil })
	s.api("GET /api/iface", func(r *http.Request) (any, error) { return s.b.Iface() })
	s.api("GET /api/usage", func(r *http.Request) (any, error) {
		ts, err := s.b.Usage(r.URL.Query())
		return nonNil(ts), err
	})
	s.mux.HandleFunc("GET /api/usage.csv", s.serveUsageCSV)
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (s *Server) api(pattern string, fn func(r *http.Request) (any, error)) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		v, err := fn(r)
		if err != nil {
			writeJSON(w, errStatus(err), map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, v)
	})
}

func errStatus(err error) int {
	var ce *control.Error
	switch {
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrBadRequest):
		return http.StatusBadRequest
	case errors.As(err, &ce):
		return ce.Status
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (s *Server) serveIndex(w http.ResponseWriter, r *http.Request) {
	var buf bytes.Buffer
	if err := s.index.Execute(&buf, map[string]string{"Token": s.token}); err != nil {
		http.Error(w, "dashboard page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(buf.Bytes())
}

// serveUsageCSV is the usage history as CSV (key, bytes in, bytes out),
// with the same query as /api/usage.
func (s *Server) serveUsageCSV(w http.ResponseWriter, r *http.Request) {
	ts, err := s.b.Usage(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), errStatus(err))
		return
	}
	by := r.URL.Query().Get("by")
	if by == "" {
		by = "total"
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="netshape-usage-by-`+csvSafe(by)+`.csv"`)
	WriteUsageCSV(w, by, ts)
}

// WriteUsageCSV writes usage totals as CSV with a header row.
func WriteUsageCSV(w interface{ Write([]byte) (int, error) }, by string, ts []store.UsageTotal) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{by, "bytes_in", "bytes_out", "bytes_total"})
	for _, t := range ts {
		cw.Write([]string{csvCell(t.Key), strconv.FormatInt(t.BytesIn, 10), strconv.FormatInt(t.BytesOut, 10),
			strconv.FormatInt(t.BytesIn+t.BytesOut, 10)})
	}
	cw.Flush()
	return cw.Error()
}

// csvCell defuses cells a spreadsheet would run as a formula (host names
// come from the network).
func csvCell(s string) string {
	if s != "" && (s[0] == '=' || s[0] == '+' || s[0] == '-' || s[0] == '@') {
		return "'" + s
	}
	return s
}

func csvSafe(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	return string(b)
}
