package policy

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// ErrInvalidConfig is wrapped by every config file error that is not a rule's
// (those wrap ErrInvalidRule).
var ErrInvalidConfig = errors.New("invalid config")

// Config is the policy file: daemon settings that belong in a file, the
// [[rule]] list and the [categories] table.
type Config struct {
	// DefaultAction applies when no rule matches. Default allow, so that a
	// daemon with no prompt client never stalls the machine.
	DefaultAction Action
	// PromptTimeout is how long an ask waits for an answer; then
	// TimeoutAction applies (once: a timeout never writes a rule).
	PromptTimeout time.Duration
	TimeoutAction Action
	// Bypass destinations are never redirected (the kernel rules skip them).
	Bypass []netip.Prefix
	// BlockQUIC drops outbound UDP 443 so browsers fall back to TCP, which
	// the proxy sees.
	BlockQUIC bool
	// Ifaces are the egress interfaces to account; empty means all.
	Ifaces []string
	// Rules from the file, with ids -1, -2, ... by position.
	Rules []Rule
	// Categories maps a category to its host patterns ("name" or
	// "*.name"): the built-in ones, replaced per name by the file's.
	Categories map[string][]string

	cats catIndex
}

// Defaults used when the file leaves a setting out.
const (
	DefaultPromptTimeout = 30 * time.Second
)

// DefaultCategories is a copy of the built-in category table.
func DefaultCategories() map[string][]string {
	return map[string][]string{
		"video": {"*.youtube.com", "*.googlevideo.com", "*.ytimg.com", "*.youtu.be", "*.netflix.com",
			"*.nflxvideo.net", "*.twitch.tv", "*.ttvnw.net", "*.vimeo.com", "*.vimeocdn.com", "*.primevideo.com",
			"*.disneyplus.com", "*.dssott.com"},
		"social": {"*.facebook.com", "*.fbcdn.net", "*.instagram.com", "*.cdninstagram.com", "*.twitter.com",
			"*.x.com", "*.twimg.com", "*.tiktok.com", "*.tiktokcdn.com", "*.reddit.com", "*.redd.it",
			"*.redditmedia.com", "*.linkedin.com", "*.licdn.com", "*.bsky.app", "*.mastodon.social"},
		"updates": {"*.windowsupdate.com", "*.update.microsoft.com", "*.delivery.mp.microsoft.com",
			"swcdn.apple.com", "swscan.apple.com", "mesu.apple.com", "*.deb.debian.org", "security.debian.org",
			"*.archive.ubuntu.com", "security.ubuntu.com", "dl.google.com", "*.gvt1.com", "pkg.freebsd.org",
			"update.freebsd.org"},
		"storage": {"*.dropbox.com", "*.dropboxapi.com", "*.dropboxusercontent.com", "drive.google.com",
			"*.googleusercontent.com", "onedrive.live.com", "*.1drv.com", "*.icloud-content.com", "*.box.com",
			"*.backblazeb2.com"},
		"music": {"*.spotify.com", "*.scdn.co", "*.spotifycdn.com", "music.apple.com", "*.deezer.com",
			"*.soundcloud.com", "*.sndcdn.com"},
		"gaming": {"*.steampowered.com", "*.steamcontent.com", "*.steamserver.net", "*.epicgames.com",
			"*.xboxlive.com", "*.playstation.net"},
	}
}

// DefaultConfig is the configuration used when there is no file.
func DefaultConfig() *Config {
	c := &Config{
		DefaultAction: Allow,
		PromptTimeout: DefaultPromptTimeout,
		TimeoutAction: Deny,
		BlockQUIC:     true,
		Categories:    DefaultCategories(),
	}
	c.cats, _ = buildCatIndex(c.Categories, nil) // built-ins are valid: tested
	return c
}

// fileConfig is the TOML shape. Keys are snake_case.
type fileConfig struct {
	DefaultAction string              `toml:"default_action"`
	PromptTimeout string              `toml:"prompt_timeout"`
	TimeoutAction string              `toml:"timeout_action"`
	Bypass        []string            `toml:"bypass"`
	BlockQUIC     *bool               `toml:"block_quic"` // nil: keep the default (on)
	Ifaces        []string            `toml:"ifaces"`
	Rule          []fileRule          `toml:"rule"`
	Categories    map[string][]string `toml:"categories"`
}

type fileRule struct {
	App      string    `toml:"app"`
	User     scalar    `toml:"user"`
	Host     string    `toml:"host"`
	Port     scalar    `toml:"port"`
	Iface    string    `toml:"iface"`
	Action   string    `toml:"action"`
	Rate     string    `toml:"rate"`
	RateIn   string    `toml:"rate_in"`
	RateOut  string    `toml:"rate_out"`
	Quota    string    `toml:"quota"`
	Period   string    `toml:"period"`
	ResetDay int       `toml:"reset_day"`
	Over     string    `toml:"over"`
	Expires  time.Time `toml:"expires"`
	Note     string    `toml:"note"`
}

// scalar accepts a TOML string or integer (port = 443, user = 1000).
type scalar string

func (s *scalar) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case string:
		*s = scalar(x)
	case int64:
		*s = scalar(strconv.FormatInt(x, 10))
	default:
		return fmt.Errorf("want a string or an integer, got %T", v)
	}
	return nil
}

// LoadConfig reads and validates a policy file. Unknown keys are errors, so
// a typo never silently drops a rule.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read policy file: %w", err)
	}
	c, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ParseConfig parses the TOML text of a policy file (see LoadConfig).
func ParseConfig(data []byte) (*Config, error) {
	var fc fileConfig
	md, err := toml.Decode(string(data), &fc)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("%w: unknown keys %s (check the spelling; see the example policy file)", ErrInvalidConfig, strings.Join(keys, ", "))
	}
	c := DefaultConfig()
	if fc.DefaultAction != "" {
		if c.DefaultAction, err = ParseAction(fc.DefaultAction); err != nil {
			return nil, fmt.Errorf("default_action: %w", err)
		}
	}
	if fc.TimeoutAction != "" {
		a, err := ParseAction(fc.TimeoutAction)
		if err != nil || a == Ask {
			return nil, fmt.Errorf("%w: timeout_action %q: use allow or deny", ErrInvalidConfig, fc.TimeoutAction)
		}
		c.TimeoutAction = a
	}
	if fc.PromptTimeout != "" {
		d, err := time.ParseDuration(fc.PromptTimeout)
		if err != nil || d < time.Second || d > 10*time.Minute {
			return nil, fmt.Errorf("%w: prompt_timeout %q: use a duration between 1s and 10m, e.g. \"30s\"", ErrInvalidConfig, fc.PromptTimeout)
		}
		c.PromptTimeout = d
	}
	for _, b := range fc.Bypass {
		p, err := netip.ParsePrefix(strings.TrimSpace(b))
		if err != nil {
			a, aerr := netip.ParseAddr(strings.TrimSpace(b))
			if aerr != nil {
				return nil, fmt.Errorf("%w: bypass %q: use a CIDR such as 192.168.0.0/16 or an IP", ErrInvalidConfig, b)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		c.Bypass = append(c.Bypass, p.Masked())
	}
	if fc.BlockQUIC != nil {
		c.BlockQUIC = *fc.BlockQUIC
	}
	for _, i := range fc.Ifaces {
		if i = strings.TrimSpace(i); i == "" || len(i) > 64 || strings.ContainsAny(i, " /") {
			return nil, fmt.Errorf("%w: ifaces: %q is not an interface name", ErrInvalidConfig, i)
		}
		c.Ifaces = append(c.Ifaces, i)
	}
	for i, fr := range fc.Rule {
		r, err := fr.rule()
		if err == nil {
			r.ID = -int64(i + 1)
			r, err = r.Normalize()
		}
		if err != nil {
			return nil, fmt.Errorf("[[rule]] #%d: %w", i+1, err)
		}
		c.Rules = append(c.Rules, r)
	}
	if len(fc.Categories) > 0 {
		for name, pats := range fc.Categories {
			c.Categories[name] = pats
		}
		if c.cats, err = buildCatIndex(c.Categories, fc.Categories); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func (fr fileRule) rule() (Rule, error) {
	r := Rule{
		App: fr.App, User: string(fr.User), Host: fr.Host, Port: string(fr.Port), Iface: fr.Iface,
		Action: Action(fr.Action), Period: Period(fr.Period), ResetDay: fr.ResetDay,
		Expires: fr.Expires, Note: fr.Note,
	}
	if fr.Action == "" {
		return r, fmt.Errorf("%w: action is required (allow, deny or ask)", ErrInvalidRule)
	}
	var err error
	for _, f := range []struct {
		name string
		s    string
		dst  *float64
	}{{"rate", fr.Rate, &r.Rate}, {"rate_in", fr.RateIn, &r.RateIn}, {"rate_out", fr.RateOut, &r.RateOut}} {
		if f.s == "" {
			continue
		}
		if *f.dst, err = ParseRate(f.s); err != nil {
			return r, fmt.Errorf("%s: %w", f.name, err)
		}
	}
	if fr.Quota != "" {
		if r.Quota, err = ParseSize(fr.Quota); err != nil {
			return r, fmt.Errorf("quota: %w", err)
		}
	}
	if r.Over, err = ParseOver(fr.Over); err != nil {
		return r, err
	}
	return r, nil
}

// catIndex maps exact names and wildcard suffixes to a category.
type catIndex struct {
	exact, wild map[string]string
}

// buildCatIndex indexes all categories. A pattern in two categories is an
// error unless exactly one of them comes from the file (override), which wins.
func buildCatIndex(all, fromFile map[string][]string) (catIndex, error) {
	idx := catIndex{exact: map[string]string{}, wild: map[string]string{}}
	// Built-ins first, then the file's, so file entries overwrite.
	names := slices.Sorted(maps.Keys(all))
	for pass := range 2 {
		for _, name := range names {
			_, isFile := fromFile[name]
			if (pass == 0) == isFile {
				continue
			}
			if name == "" || strings.ContainsAny(name, " \t\n") {
				return idx, fmt.Errorf("%w: category name %q: use a single word", ErrInvalidConfig, name)
			}
			for _, p := range all[name] {
				h, err := ParseHost(p)
				if err != nil || (h.Kind != HostName && h.Kind != HostWildcard) {
					return idx, fmt.Errorf("%w: category %s: pattern %q: use a name or *.name", ErrInvalidConfig, name, p)
				}
				m := idx.exact
				if h.Kind == HostWildcard {
					m = idx.wild
				}
				if prev, ok := m[h.Name]; ok && prev != name {
					if _, prevFile := fromFile[prev]; prevFile == isFile {
						return idx, fmt.Errorf("%w: pattern %q is in categories %s and %s; keep it in one", ErrInvalidConfig, p, prev, name)
					}
				}
				m[h.Name] = name
			}
		}
	}
	return idx, nil
}

// Category is the category of a host name ("video", ...) or "" when none
// fits. An exact pattern beats a wildcard; a longer wildcard beats a shorter.
func (c *Config) Category(host string) string {
	idx := c.cats
	if idx.exact == nil {
		var err error
		if idx, err = buildCatIndex(c.Categories, nil); err != nil {
			return ""
		}
	}
	h := normName(host)
	if h == "" {
		return ""
	}
	if name, ok := idx.exact[h]; ok {
		return name
	}
	for s := h; ; {
		if name, ok := idx.wild[s]; ok {
			return name
		}
		i := strings.IndexByte(s, '.')
		if i < 0 {
			return ""
		}
		s = s[i+1:]
	}
}
