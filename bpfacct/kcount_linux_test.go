package bpfacct

import (
	"testing"
)

// TestCounterProgramLoads loads the counter for both link kinds, with and
// without DNS pass-up: the verifier must accept every variant.
func TestCounterProgramLoads(t *testing.T) {
	needRoot(t)
	for _, link := range []LinkType{LinkEthernet, LinkRawIP} {
		for _, dns := range []bool{false, true} {
			p, err := loadCounterProgram(link, 16, dns)
			if err != nil {
				t.Fatalf("link %v dns %v: %+v", link, dns, err)
			}
			p.close()
		}
	}
}
