package flow

import (
	"net/netip"
	"time"
)

// State is where a flow is in its life.
type State string

const (
	StateHeld    State = "held"    // waiting for a prompt answer
	StateDialing State = "dialing" // upstream dial in progress
	StateOpen    State = "open"    // relaying
	StateClosed  State = "closed"  // done; see Err for why if it failed
)

// Host sources, in order of precedence: what the app said (sni, http) over what it
// resolved (dns) over what a reverse lookup says (ptr).
const (
	HostSNI  = "sni"
	HostHTTP = "http"
	HostDNS  = "dns"
	HostPTR  = "ptr"
)

// Flow is one proxied TCP connection. Src is the client's address as the proxy
// saw it; Dst is the original destination the client asked for.
type Flow struct {
	ID    uint64         `json:"id"`
	Src   netip.AddrPort `json:"src"`
	Dst   netip.AddrPort `json:"dst"`
	Start time.Time      `json:"start"`
	End   time.Time      `json:"end,omitzero"`
	State State          `json:"state"`

	// Owning process (procmap). PID 0 means unknown.
	PID     int    `json:"pid,omitempty"`
	PPID    int    `json:"ppid,omitempty"`
	Exe     string `json:"exe,omitempty"`
	Cmdline string `json:"cmdline,omitempty"`
	UID     int    `json:"uid"`
	User    string `json:"user,omitempty"`
	Cgroup  string `json:"cgroup,omitempty"`

	// Host name the app meant and where it came from (HostSNI, HostHTTP, ...).
	Host       string `json:"host,omitempty"`
	HostSource string `json:"host_source,omitempty"`

	// Iface is the interface the upstream connection leaves by.
	Iface string `json:"iface,omitempty"`

	// Verdict is the policy decision ("allow", "deny", ...), RuleID the rule that made it (0: default).
	Verdict string `json:"verdict,omitempty"`
	RuleID  int64  `json:"rule_id,omitempty"`

	// BytesIn counts bytes from the server to the client, BytesOut from the client to the server.
	BytesIn  int64 `json:"bytes_in"`
	BytesOut int64 `json:"bytes_out"`

	// Err says why the flow ended abnormally, if it did.
	Err string `json:"error,omitempty"`
}

// App is the short name of the owning program: the base name of Exe, or
// "unknown" when the process could not be found.
func (f *Flow) App() string {
	if f.Exe == "" {
		return "unknown"
	}
	for i := len(f.Exe) - 1; i >= 0; i-- {
		if f.Exe[i] == '/' {
			return f.Exe[i+1:]
		}
	}
	return f.Exe
}

// Name is the best name for the destination: the host when known, else the IP.
func (f *Flow) Name() string {
	if f.Host != "" {
		return f.Host
	}
	return f.Dst.Addr().String()
}
