package ui

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
)

// TokenFile is the name of the token file in the state directory.
const TokenFile = "ui.token"

// tokenLen is the token's length in hex digits (128 bits).
const tokenLen = 32

// CheckAddr validates a --ui listen address: host:port with an IP address or
// "localhost" as host. Anything but loopback needs allowRemote.
func CheckAddr(addr string, allowRemote bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("bad --ui address %q: want HOST:PORT such as 127.0.0.1:9050: %w", addr, err)
	}
	if port == "" {
		return fmt.Errorf("bad --ui address %q: no port (e.g. 127.0.0.1:9050)", addr)
	}
	if isLoopbackHost(host) {
		return nil
	}
	if !allowRemote {
		what := host
		if host == "" {
			what = "every interface"
		}
		return fmt.Errorf("%w: --ui %s would listen on %s; use 127.0.0.1:%s, or add --ui-allow-remote to expose it (the token then travels in clear text: put TLS in front)", ErrRemote, addr, what, port)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			return fmt.Errorf("bad --ui address %q: the host must be an IP address or localhost", addr)
		}
	}
	return nil
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// LoadOrCreateToken returns the token in path, or writes a new random one
// (mode 0600) when the file is missing, malformed or readable by others.
// Keeping the token across restarts keeps bookmarks and cookies working.
func LoadOrCreateToken(path string) (string, error) {
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 == 0 {
		b, err := os.ReadFile(path)
		if err == nil {
			if t := strings.TrimSpace(string(b)); validToken(t) {
				return t, nil
			}
		}
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read dashboard token %s: %w", path, err)
	}
	var b [tokenLen / 2]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("make dashboard token: %w", err)
	}
	t := hex.EncodeToString(b[:])
	os.Remove(path) // a file readable by others is replaced, not rewritten in place
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("write dashboard token %s: %w (check --state-dir)", path, err)
	}
	_, err = f.WriteString(t + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("write dashboard token %s: %w", path, err)
	}
	return t, nil
}

func validToken(t string) bool {
	if len(t) != tokenLen {
		return false
	}
	_, err := hex.DecodeString(t)
	return err == nil
}

const (
	cookieName  = "netshape_ui"
	tokenHeader = "X-Netshape-Token"
)

// requestToken is the token a request carries, and whether it came in a
// header (which a browser never adds by itself, unlike a cookie).
func requestToken(r *http.Request) (tok string, inHeader bool) {
	if h := r.Header.Get(tokenHeader); h != "" {
		return h, true
	}
	if h, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return strings.TrimSpace(h), true
	}
	if c, err := r.Cookie(cookieName); err == nil {
		return c.Value, false
	}
	return "", false
}

func (s *Server) tokenOK(t string) bool {
	return len(t) == len(s.token) && subtle.ConstantTimeCompare([]byte(t), []byte(s.token)) == 1
}

// hostOK refuses requests whose Host is a name other than localhost while
// the server is loopback-only: a DNS-rebinding page then cannot reach it even
// before the token check.
func (s *Server) hostOK(r *http.Request) bool {
	if s.allowRemote {
		return true
	}
	h := r.Host
	if hh, _, err := net.SplitHostPort(h); err == nil {
		h = hh
	}
	return isLoopbackHost(h)
}

// sameOrigin is the CSRF check for requests that change state: the token in
// a header (set by the page's script, never by a cross-site form), and, when
// the browser says where the request comes from, the same origin.
func (s *Server) sameOrigin(r *http.Request) error {
	t, inHeader := requestToken(r)
	if !inHeader || !s.tokenOK(t) {
		return errors.New("changes need the token in the " + tokenHeader + " header (the dashboard's buttons send it)")
	}
	if o := r.Header.Get("Origin"); o != "" && o != "null" && o != "http://"+r.Host {
		return fmt.Errorf("cross-origin request from %s refused", o)
	}
	if o := r.Header.Get("Origin"); o == "null" {
		return errors.New("request from an opaque origin refused")
	}
	if sf := r.Header.Get("Sec-Fetch-Site"); sf != "" && sf != "same-origin" && sf != "none" {
		return fmt.Errorf("cross-site request (%s) refused", sf)
	}
	return nil
}
