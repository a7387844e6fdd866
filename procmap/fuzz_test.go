package procmap

import (
	"net/netip"
	"testing"
)

func FuzzParseDiagResponse(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		s, found, err := parseDiagResponse(b, 9)
		if err != nil && (found || s != (diagSock{})) {
			t.Fatalf("error %v with a result %+v %v", err, s, found)
		}
	})
}

func FuzzParseXNUPcbList(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		es, _ := parseXNUPcbList(b)
		for _, e := range es {
			if !e.local.IsValid() || !e.remote.IsValid() || e.pid < 0 {
				t.Fatalf("bad entry %+v", e)
			}
		}
	})
}

func FuzzParseProcArgs2(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, _ = parseProcArgs2(b)
	})
}

func FuzzParseFreeBSD(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		es, _ := parseFreeBSDPcbList(b)
		for _, e := range es {
			if !e.local.IsValid() || e.local.Addr().Is4In6() {
				t.Fatalf("bad entry %+v", e)
			}
		}
		_, _, _, _ = findFreeBSDFileOwner(b, 1)
		_, _ = parseFreeBSDKinfoProcs(b, 8)
		_, _ = parseFreeBSDKinfoProcs(b, 4)
		_, _ = findPcb(es, netip.AddrPort{}, netip.AddrPort{})
	})
}

func FuzzParseStat(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		ppid, _, err := parseStat(b)
		if err == nil && ppid < 0 {
			t.Fatalf("negative ppid %d", ppid)
		}
		_ = parseCmdline(b)
		_ = parseStatusUID(b)
		_ = parseCgroup(b)
		_, _ = socketInode(b)
	})
}
