package bpfacct

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestRemoteTableIsBounded(t *testing.T) {
	c := newCounters(8)
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}) }
	// 8 heavy remotes, then 100 light ones: the light ones fold into "other".
	for i := range 8 {
		c.record(observation{out: true, proto: ProtoTCP, remote: addr(i), n: 1000})
	}
	for i := 8; i < 108; i++ {
		c.record(observation{out: false, proto: ProtoUDP, remote: addr(i), n: 10})
	}
	if len(c.remotes) != 8 {
		t.Fatalf("%d remotes kept, cap is 8", len(c.remotes))
	}
	if o := c.other[ProtoUDP]; o.BytesIn != 1000 || o.PacketsIn != 100 {
		t.Errorf("other udp %+v, want 1000 bytes in 100 packets", o)
	}
	c.makeRoom()
	if len(c.remotes) >= 8 {
		t.Errorf("makeRoom left %d of 8", len(c.remotes))
	}
	c.record(observation{proto: ProtoICMP, remote: addr(999), n: 64})
	if c.remotes[remoteKey{addr(999), ProtoICMP}] == nil {
		t.Error("no room for a new remote after makeRoom")
	}
	// Nothing is lost: totals over remotes + other equal the per-protocol totals.
	var sum Traffic
	for _, r := range c.remotes {
		sum.add(*r)
	}
	for _, o := range c.other {
		sum.add(o)
	}
	if tot := c.totalsLocked(); sum != tot {
		t.Errorf("remotes+other %+v != totals %+v", sum, tot)
	}
}

func TestSnapshotMergesAndCaps(t *testing.T) {
	a, err := New(Config{MaxRemotes: 2})
	if err != nil {
		t.Fatal(err)
	}
	x, y, z := netip.MustParseAddr("198.18.0.10"), netip.MustParseAddr("198.18.0.11"), netip.MustParseAddr("fd00:5e7::9")
	e1, e2 := a.entry("eth0"), a.entry("wlan0")
	e1.c.record(observation{out: true, proto: ProtoTCP, remote: x, n: 500})
	e2.c.record(observation{out: false, proto: ProtoTCP, remote: x, n: 700})
	e2.c.record(observation{out: true, proto: ProtoUDP, remote: y, n: 100})
	e1.c.record(observation{out: true, proto: ProtoUDP, remote: z, n: 50})
	e1.c.record(observation{out: true, proto: ProtoOther, n: 42}) // ARP: no remote
	s := a.Snapshot()
	if len(s.Ifaces) != 2 || s.Ifaces[0].Name != "eth0" || s.Ifaces[1].Name != "wlan0" {
		t.Fatalf("ifaces %+v", s.Ifaces)
	}
	if got := s.Ifaces[0].Traffic; got != (Traffic{BytesOut: 592, PacketsOut: 3}) {
		t.Errorf("eth0 totals %+v", got)
	}
	if got := s.Ifaces[0].ByProto[ProtoOther]; got.BytesOut != 42 {
		t.Errorf("eth0 other %+v", got)
	}
	want := []RemoteStat{
		{Addr: x, Proto: ProtoTCP, Traffic: Traffic{BytesIn: 700, BytesOut: 500, PacketsIn: 1, PacketsOut: 1}},
		{Addr: y, Proto: ProtoUDP, Traffic: Traffic{BytesOut: 100, PacketsOut: 1}},
		{Other: true, Proto: ProtoUDP, Traffic: Traffic{BytesOut: 50, PacketsOut: 1}},
	}
	if len(s.Remotes) != len(want) {
		t.Fatalf("remotes %+v, want %+v", s.Remotes, want)
	}
	for i := range want {
		if s.Remotes[i] != want[i] {
			t.Errorf("remote %d = %+v, want %+v", i, s.Remotes[i], want[i])
		}
	}
	js, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(js), `"other":{"bytes_in":0,"bytes_out":42`) || !strings.Contains(string(js), `"proto":"tcp"`) {
		t.Errorf("JSON lacks readable protocol names: %s", js)
	}
	var back Snapshot
	if err := json.Unmarshal(js, &back); err != nil || back.Remotes[0] != want[0] {
		t.Errorf("JSON round trip: %v %+v", err, back.Remotes)
	}
}

func TestNewValidates(t *testing.T) {
	for _, cfg := range []Config{
		{Snaplen: 20},
		{Snaplen: 70000},
		{RingBytes: 1000},
		{MaxRemotes: -1},
		{PollInterval: time.Millisecond},
	} {
		if _, err := New(cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("New(%+v) = %v, want ErrConfig", cfg, err)
		}
	}
	a, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if a.cfg.Snaplen != DefaultSnaplen || a.cfg.MaxRemotes != DefaultMaxRemotes || a.cfg.RingBytes != DefaultRingBytes {
		t.Errorf("defaults not filled: %+v", a.cfg)
	}
}

func TestRunTwice(t *testing.T) {
	a, err := New(Config{Ifaces: []string{"tnothere0"}})
	if err != nil {
		t.Fatal(err)
	}
	a.running.Store(true)
	if err := a.Run(t.Context()); !errors.Is(err, ErrRunning) {
		t.Errorf("second Run = %v, want ErrRunning", err)
	}
}

func TestLinkTypeFromARPHRD(t *testing.T) {
	for _, tc := range []struct {
		t, hw int
		want  LinkType
	}{
		{1, 6, LinkEthernet}, {772, 6, LinkEthernet}, {65534, 0, LinkRawIP}, {512, 0, LinkRawIP},
		{776, 0, LinkRawIP}, {-1, 6, LinkEthernet}, {-1, 0, LinkRawIP}, {801, 6, LinkEthernet},
	} {
		if got := linkTypeFromARPHRD(tc.t, tc.hw); got != tc.want {
			t.Errorf("ARPHRD %d hw %d: %v, want %v", tc.t, tc.hw, got, tc.want)
		}
	}
}
