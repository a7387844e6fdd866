package dnsmap_test

import (
	"fmt"
	"net/netip"

	"github.com/miekg/dns"
	"github.com/netshape/netshape/dnsmap"
)

func Example() {
	m := dnsmap.New(dnsmap.Config{})
	defer m.Close()

	// What the capture sees: a resolver's answer through a CDN's CNAME.
	q := new(dns.Msg)
	q.SetQuestion("www.youtube.com.", dns.TypeA)
	r := new(dns.Msg)
	r.SetReply(q)
	for _, s := range []string{
		"www.youtube.com. 300 IN CNAME youtube-ui.l.google.com.",
		"youtube-ui.l.google.com. 300 IN A 198.18.0.7",
	} {
		rr, _ := dns.NewRR(s)
		r.Answer = append(r.Answer, rr)
	}
	payload, _ := r.Pack()
	m.ObserveUDP(payload)

	// What the proxy asks for a connection to 198.18.0.7.
	name, ok := m.Name(netip.MustParseAddr("198.18.0.7"))
	fmt.Println(name, ok)
	// Output: www.youtube.com true
}
