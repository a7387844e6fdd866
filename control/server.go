package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"
)

// Cred is a peer's identity as the kernel reports it.
type Cred struct {
	PID int
	UID int
	GID int
}

type credKey struct{}

// PeerCred returns the credentials of the peer that sent r.
func PeerCred(r *http.Request) (Cred, bool) {
	c, ok := r.Context().Value(credKey{}).(Cred)
	return c, ok
}

// Server serves the API on a unix socket.
type Server struct {
	mux   *http.ServeMux
	gid   int // group allowed besides root and the daemon's user; -1 for none
	log   *slog.Logger
	srv   *http.Server
	ln    net.Listener
	path  string
	inGrp func(uid, gid int) bool
}

// NewServer returns a server whose socket will admit root, the daemon's own
// user, and members of group gid (-1: nobody else).
func NewServer(gid int, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{mux: http.NewServeMux(), gid: gid, log: log, inGrp: userInGroup}
	return s
}

// Handle registers a JSON endpoint: fn's result is encoded as JSON; an error
// becomes {"error": "..."} with the status of an *Error, or 500.
func (s *Server) Handle(pattern string, fn func(r *http.Request) (any, error)) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		v, err := fn(r)
		if err != nil {
			st := http.StatusInternalServerError
			var ae *Error
			if errors.As(err, &ae) {
				st = ae.Status
			}
			writeJSON(w, st, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, v)
	})
}

// HandleRaw registers a plain handler (streams, CSV).
func (s *Server) HandleRaw(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// authorized reports whether a peer may use the API.
func (s *Server) authorized(c Cred) bool {
	if c.UID == 0 || c.UID == os.Geteuid() {
		return true
	}
	return s.gid >= 0 && (c.GID == s.gid || s.inGrp(c.UID, s.gid))
}

func userInGroup(uid, gid int) bool {
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return false
	}
	ids, err := u.GroupIds()
	return err == nil && slices.Contains(ids, strconv.Itoa(gid))
}

// Listen creates the socket at path: its directory (0755) if missing, a stale
// socket of a dead daemon removed, mode 0600, or 0660 owned by group gid when
// gid >= 0. It refuses to replace a socket a live daemon answers on.
func (s *Server) Listen(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create control socket directory: %w", err)
	}
	if _, err := os.Lstat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return fmt.Errorf("control socket %s is in use by a running netshape", path)
		}
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("remove stale control socket %s: %w", path, err)
		}
	}
	// Create it with no access for anyone, then open it up to exactly what is wanted.
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return fmt.Errorf("listen on control socket %s: %w", path, err)
	}
	if s.gid >= 0 {
		if err := os.Chown(path, os.Geteuid(), s.gid); err != nil {
			ln.Close()
			return fmt.Errorf("give control socket to group %d: %w", s.gid, err)
		}
		if err := os.Chmod(path, 0o660); err != nil {
			ln.Close()
			return fmt.Errorf("chmod control socket: %w", err)
		}
	}
	s.ln, s.path = ln, path
	// Built here, not in Serve, so that Close (from another goroutine) never
	// races with Serve's start.
	s.srv = s.httpServer()
	return nil
}

// Serve answers requests until Close.
func (s *Server) Serve() error {
	err := s.srv.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func (s *Server) httpServer() *http.Server {
	return &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, ok := PeerCred(r)
			if !ok || !s.authorized(c) {
				s.log.Warn("control request refused", "uid", c.UID, "pid", c.PID, "path", r.URL.Path)
				writeJSON(w, http.StatusForbidden, map[string]string{"error": "not allowed: use root, or a member of the daemon's --group"})
				return
			}
			s.mux.ServeHTTP(w, r)
		}),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if uc, ok := c.(*net.UnixConn); ok {
				if cred, err := peerCred(uc); err == nil {
					return context.WithValue(ctx, credKey{}, cred)
				}
			}
			return ctx
		},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
}

// Close stops the server and removes the socket. It is idempotent.
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
	if s.path != "" {
		os.Remove(s.path)
	}
	return nil
}

// Error is an API error with its HTTP status.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string { return e.Message }

// Errorf makes an *Error.
func Errorf(status int, format string, args ...any) error {
	return &Error{Status: status, Message: fmt.Sprintf(format, args...)}
}
