package main

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/netshape/netshape/daemon"
	"github.com/netshape/netshape/policy"
	"github.com/netshape/netshape/ui"
)

func startCommand() *cli.Command {
	return &cli.Command{
		Name:  "start",
		Usage: "redirect outbound TCP through netshape and run in the foreground until SIGINT/SIGTERM",
		Description: `Installs redirect rules (nftables on Linux, pf on macOS/FreeBSD) so every outbound TCP
connection goes through netshape's transparent proxy, and removes them on exit.
A run killed with -9 leaves them: the next start, or "netshape cleanup", removes them.`,
		Flags: []cli.Flag{
			socketFlag,
			&cli.StringFlag{Name: "state-dir", Value: daemon.DefaultStateDir, Usage: "`DIR` for the pid file and database"},
			&cli.StringFlag{Name: "group", Usage: "`GROUP` (name or gid) whose members may use the control socket (mode 0660); default root only (0600)"},
			&cli.UintFlag{Name: "port", Value: daemon.DefaultPort, Usage: "first proxy `PORT` on 127.0.0.1 and ::1 (on Linux the proxy takes PORT to PORT+3, so a reused source port keeps its process)"},
			&cli.StringSliceFlag{Name: "bypass", Usage: "never redirect connections to `CIDR` (repeatable)"},
			&cli.BoolFlag{Name: "block-quic", Value: true, Usage: "reject outbound UDP 443 (QUIC) so browsers use TCP, which netshape sees"},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
			&cli.StringFlag{Name: "config", Usage: "policy `FILE` (TOML: default action, rules, categories; see README)"},
			&cli.StringFlag{Name: "default", Usage: "`ACTION` when no rule matches: allow (default), ask or deny"},
			&cli.DurationFlag{Name: "prompt-timeout", Value: policy.DefaultPromptTimeout, Usage: "how long a held connection waits for an answer (the config file's prompt_timeout unless set); then the timeout action applies once"},
			&cli.IntFlag{Name: "max-conns", Usage: "most relayed connections at once (`N`); the open-file limit is raised to fit them, and past them new connections are reset (default: as many as the open-file limit fits)"},
			&cli.IntFlag{Name: "max-pending", Value: 64, Usage: "most questions waiting at once; past it new ones get the timeout action at once"},
			&cli.BoolFlag{Name: "capture", Value: true, Usage: "capture on interfaces: DNS names, full accounting, interface quotas"},
			&cli.StringSliceFlag{Name: "iface", Usage: "capture on `IF` (repeatable; default every interface that is up and not loopback)"},
			&cli.BoolFlag{Name: "ptr", Value: true, Usage: "look up reverse DNS (in the background) for destinations without a name"},
			&cli.StringFlag{Name: "ui", Usage: "serve the web dashboard on `HOST:PORT` (e.g. 127.0.0.1:9050; off by default); its URL with the token is logged"},
			&cli.BoolFlag{Name: "ui-allow-remote", Usage: "let --ui listen on an address other than loopback"},
			&cli.StringFlag{Name: "cpu-profile", Hidden: true, Usage: "write a Go CPU profile of the whole run to `FILE` (performance work; see BENCHMARKS.md)"},
			&cli.BoolFlag{Name: "goroutine-relay", Hidden: true, Usage: "relay on a goroutine per connection instead of the event loops (comparisons; see BENCHMARKS.md)"},
			&cli.StringFlag{Name: "mem-profile", Hidden: true, Usage: "write a Go allocation profile of the whole run to `FILE` when it ends (performance work)"},
			&cli.StringFlag{Name: "trace", Hidden: true, Usage: "write a Go execution trace of the whole run to `FILE` (scheduling work: go tool trace)"},
		},
		Action: func(c *cli.Context) error {
			cfg, err := startConfig(c)
			if err != nil {
				return err
			}
			cfg.UI, cfg.UIAllowRemote = c.String("ui"), c.Bool("ui-allow-remote")
			if cfg.UI != "" {
				if err := ui.CheckAddr(cfg.UI, cfg.UIAllowRemote); err != nil {
					return err
				}
			}
			if f := c.String("cpu-profile"); f != "" {
				stop, err := startCPUProfile(f)
				if err != nil {
					return err
				}
				defer stop()
			}
			if f := c.String("mem-profile"); f != "" {
				stop, err := startMemProfile(f)
				if err != nil {
					return err
				}
				defer stop()
			}
			if f := c.String("trace"); f != "" {
				stop, err := startTrace(f)
				if err != nil {
					return err
				}
				defer stop()
			}
			return daemon.Run(c.Context, cfg)
		},
	}
}

func startConfig(c *cli.Context) (daemon.Config, error) {
	log, err := newLogger(c.String("log-level"))
	if err != nil {
		return daemon.Config{}, err
	}
	port := c.Uint("port")
	if port == 0 || port > 65535 {
		return daemon.Config{}, fmt.Errorf("bad --port %d: use 1-65535", port)
	}
	var bypass []netip.Prefix
	for _, s := range c.StringSlice("bypass") {
		p, err := parsePrefix(s)
		if err != nil {
			return daemon.Config{}, err
		}
		bypass = append(bypass, p)
	}
	pol := policy.DefaultConfig()
	if f := c.String("config"); f != "" {
		if pol, err = policy.LoadConfig(f); err != nil {
			return daemon.Config{}, err
		}
	}
	if a := c.String("default"); a != "" {
		if pol.DefaultAction, err = policy.ParseAction(a); err != nil {
			return daemon.Config{}, fmt.Errorf("bad --default: %w", err)
		}
	}
	if c.IsSet("prompt-timeout") {
		if pol.PromptTimeout = c.Duration("prompt-timeout"); pol.PromptTimeout <= 0 {
			return daemon.Config{}, fmt.Errorf("bad --prompt-timeout %v: must be positive", pol.PromptTimeout)
		}
	}
	blockQUIC := pol.BlockQUIC
	if c.IsSet("block-quic") {
		blockQUIC = c.Bool("block-quic")
	}
	ifaces := pol.Ifaces
	if c.IsSet("iface") {
		ifaces = c.StringSlice("iface")
	}
	if c.Int("max-pending") < 1 {
		return daemon.Config{}, fmt.Errorf("bad --max-pending %d: must be at least 1", c.Int("max-pending"))
	}
	if c.Int("max-conns") < 0 {
		return daemon.Config{}, fmt.Errorf("bad --max-conns %d: must be positive (or 0 for what the open-file limit fits)", c.Int("max-conns"))
	}
	return daemon.Config{
		MaxConns:       c.Int("max-conns"),
		GoroutineRelay: c.Bool("goroutine-relay"),
		StateDir:       c.String("state-dir"),
		Socket:         socketPath(c),
		Group:          c.String("group"),
		Port:           uint16(port),
		Bypass:         append(pol.Bypass, bypass...),
		BlockQUIC:      blockQUIC,
		Policy:         pol,
		MaxPending:     c.Int("max-pending"),
		Capture:        c.Bool("capture"),
		Ifaces:         ifaces,
		PTR:            c.Bool("ptr"),
		Version:        version,
		Logger:         log,
	}, nil
}

// parsePrefix accepts a CIDR or a single address.
func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("bad --bypass %q: want a CIDR such as 192.168.0.0/16 or fd00::/8", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("bad --bypass %q: want a CIDR such as 192.168.0.0/16 or an address", s)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

func cleanupCommand() *cli.Command {
	return &cli.Command{
		Name:  "cleanup",
		Usage: "remove rules and state a crashed netshape left behind (idempotent)",
		Flags: []cli.Flag{
			socketFlag,
			&cli.StringFlag{Name: "state-dir", Value: daemon.DefaultStateDir, Usage: "`DIR` of the run to clean up"},
		},
		Action: func(c *cli.Context) error {
			msg, err := daemon.Cleanup(daemon.Config{StateDir: c.String("state-dir"), Socket: socketPath(c)})
			if err != nil {
				return err
			}
			fmt.Println(msg)
			return nil
		},
	}
}
