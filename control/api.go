package control

import "time"

// Status is GET /v1/status.
type Status struct {
	Running  bool      `json:"running"`
	PID      int       `json:"pid"`
	Version  string    `json:"version"`
	Backend  string    `json:"backend"`
	Listen   []string  `json:"listen"`
	Started  time.Time `json:"started"`
	StateDir string    `json:"state_dir"`
	Default  string    `json:"default_action,omitempty"`
	Active   int       `json:"active_flows"`
	Total    int64     `json:"total_flows"`
	Denied   int64     `json:"denied_flows"`
	Failed   int64     `json:"failed_flows"`
	Refused  int64     `json:"refused_flows,omitempty"` // reset at once: MaxConns flows were open
	MaxConns int       `json:"max_conns,omitempty"`
	BytesIn  int64     `json:"bytes_in"`
	BytesOut int64     `json:"bytes_out"`
	Pending  int       `json:"pending"`
	Rules    int       `json:"rules"`
	Warnings []string  `json:"warnings,omitempty"`

	// How the per-connection fast paths run, so a slow machine can tell why:
	// the relay (event loops on Linux, else a goroutine per connection), the
	// process lookup (Procmap "bpf", else "sock_diag"; "sysctl" on darwin and
	// freebsd) with how its BPF connect records answered, and how interface
	// capture counts (Capture "ebpf", else "ring", or "bpf" on darwin and
	// freebsd; "off" without capture). A note says why a fast path is not used.
	Relay       string      `json:"relay,omitempty"` // "event loops (N)" or "goroutines"
	Procmap     string      `json:"procmap,omitempty"`
	ProcmapNote string      `json:"procmap_note,omitempty"`
	ProcmapBPF  *ProcmapBPF `json:"procmap_bpf,omitempty"`
	Capture     string      `json:"capture,omitempty"`
	CaptureNote string      `json:"capture_note,omitempty"`
}

// ProcmapBPF counts process lookups by how the BPF connect record answered:
// a hit names the process at once; a miss (no record: the socket connected
// before the daemon started, or the record was evicted), a stale record (its
// process had exited) or an error falls back to the slower sock_diag query.
type ProcmapBPF struct {
	Hits   uint64 `json:"hits"`
	Misses uint64 `json:"misses"`
	Stale  uint64 `json:"stale"`
	Errors uint64 `json:"errors"`
}

// Pending is one question waiting for the user: one app wanting one host.
// Connections from the same app to the same host that arrive while it waits
// join it (Count), and one answer releases them all.
type Pending struct {
	ID         int64     `json:"id"`
	App        string    `json:"app"`
	Exe        string    `json:"exe,omitempty"`
	PID        int       `json:"pid,omitempty"`
	Cmdline    string    `json:"cmdline,omitempty"`
	User       string    `json:"user,omitempty"`
	UID        int       `json:"uid"`
	Dst        string    `json:"dst"`
	Port       uint16    `json:"port"`
	Host       string    `json:"host,omitempty"`
	HostSource string    `json:"host_source,omitempty"`
	Count      int       `json:"count"`
	Since      time.Time `json:"since"`
	Deadline   time.Time `json:"deadline"`
	// TodayIn and TodayOut are the app's bytes so far today.
	TodayIn  int64 `json:"today_in"`
	TodayOut int64 `json:"today_out"`
}

// Answer is POST /v1/pending/{id}.
type Answer struct {
	Action string `json:"action"` // "allow" or "deny"
	// Always writes a rule; For (a Go duration, "2h") writes one that expires.
	Always bool   `json:"always,omitempty"`
	For    string `json:"for,omitempty"`
	// Rate throttles the allowed connections (bytes per second, both directions).
	Rate float64 `json:"rate,omitempty"`
	// Scope of a written rule: "host" (default), "domain" or "app".
	Scope string `json:"scope,omitempty"`
}

// AnswerResult says what an answer did.
type AnswerResult struct {
	Released int   `json:"released"`
	RuleID   int64 `json:"rule_id,omitempty"`
}

// Event is one line of GET /v1/events.
type Event struct {
	Type    string    `json:"type"` // "pending", "resolved", "quota", "warning", "hello"
	Pending *Pending  `json:"pending,omitempty"`
	ID      int64     `json:"id,omitempty"`
	Message string    `json:"message,omitempty"`
	Time    time.Time `json:"time"`
}

// RuleSpec is POST /v1/rules: a rule as the CLI writes it, in words. The
// daemon parses and validates it, so every client gets the same errors.
type RuleSpec struct {
	App      string `json:"app,omitempty"`
	User     string `json:"user,omitempty"`
	Host     string `json:"host,omitempty"`
	Port     string `json:"port,omitempty"`
	Iface    string `json:"iface,omitempty"`
	Action   string `json:"action"`
	Rate     string `json:"rate,omitempty"`
	RateIn   string `json:"rate_in,omitempty"`
	RateOut  string `json:"rate_out,omitempty"`
	Quota    string `json:"quota,omitempty"`
	Period   string `json:"period,omitempty"`
	ResetDay int    `json:"reset_day,omitempty"`
	Over     string `json:"over,omitempty"`
	For      string `json:"for,omitempty"`
	Note     string `json:"note,omitempty"`
}

// Run is POST /v1/runs: `netshape run` registers a command before starting
// it, so every flow of the command and its descendants is shaped and counted.
type Run struct {
	ID      int64   `json:"id,omitempty"`
	RootPID int     `json:"root_pid"`         // flows of this process and its descendants
	Cgroup  string  `json:"cgroup,omitempty"` // or of this cgroup (Linux), which catches re-parented children
	Limit   int64   `json:"limit,omitempty"`  // bytes, both directions; 0 none
	Rate    float64 `json:"rate,omitempty"`   // bytes per second each way; 0 none
	Command string  `json:"command,omitempty"`
	// Answers of GET /v1/runs/{id}:
	Used      int64 `json:"used"`
	Exhausted bool  `json:"exhausted"`
}

// IfaceReport is GET /v1/iface: per interface, the kernel's counters beside
// what netshape captured and what its proxy relayed.
type IfaceReport struct {
	Time    time.Time    `json:"time"`
	Ifaces  []IfaceEntry `json:"ifaces"`
	Capture bool         `json:"capture"` // false when capture is off or failed
}

// IfaceEntry is one interface of an IfaceReport.
type IfaceEntry struct {
	Name      string `json:"name"`
	Up        bool   `json:"up"`
	KernelIn  int64  `json:"kernel_in"`
	KernelOut int64  `json:"kernel_out"`
	// Captured bytes by protocol ("tcp", "udp", "icmp", "other").
	CapturedIn  int64               `json:"captured_in"`
	CapturedOut int64               `json:"captured_out"`
	ByProto     map[string][2]int64 `json:"by_proto,omitempty"`
	Drops       uint64              `json:"capture_drops"`
	Capturing   bool                `json:"capturing"`
	ProxiedIn   int64               `json:"proxied_in"`
	ProxiedOut  int64               `json:"proxied_out"`
	Blocked     bool                `json:"blocked"` // an interface quota ran out
}
