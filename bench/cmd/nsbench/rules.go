package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

// policyCmd prints the netshape-r policy file, to run netshape with it by hand
// (netshape start --config FILE) or to edit it for -rules-file.
func policyCmd(args []string) error {
	fs := flag.NewFlagSet("policy", flag.ExitOnError)
	n := fs.Int("n", 1000, "rules")
	fs.Parse(args)
	_, err := os.Stdout.WriteString(benchPolicy(*n))
	return err
}

// benchServerPort is the bench server's port inside the namespaces.
const benchServerPort = 7000

// benchPolicy is the TOML policy file of the netshape-r contender: default
// action allow and n rules (n ≥ 14 gives every kind below at least once) of
// the kinds a real policy file holds — per-app denies, asks and rate caps by
// name and by path, host names, wildcards, IPs, IPv4 and IPv6 CIDRs, ports on
// the benchmark's own network, users, interfaces, quotas. None of them matches
// the benchmark's traffic (the nsbench binary, run as root, dialling
// benchServerPort on 198.18.0.0/24 over a tb… veth), so every bench flow ends
// at the default allow after the daemon has looked through its rules; the test
// checks this with policy.Decide.
//
// Ports avoided: benchServerPort (the bench server). Addresses avoided:
// 198.18.0.0/24 except in rules that also name another port.
func benchPolicy(n int) string {
	var b strings.Builder
	b.WriteString(`# netshape-r: written by nsbench. Default allow; none of these rules matches
# the benchmark's traffic, so every bench flow is allowed by the default after
# the rules are evaluated.
default_action = "allow"
prompt_timeout = "5s"
timeout_action = "deny"

`)
	apps := []string{"firefox", "chromium", "curl", "wget", "ssh", "git", "steam", "spotify", "slack", "zoom",
		"dropbox", "telegram-desktop", "apt", "snapd", "python3", "node", "java", "thunderbird", "signal-desktop", "vlc"}
	actions := []string{"deny", "allow", "ask"}
	rule := func(kv ...string) {
		b.WriteString("[[rule]]\n")
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "" {
				continue
			}
			v := kv[i+1]
			if kv[i] != "port" && kv[i] != "reset_day" && kv[i] != "user" {
				v = fmt.Sprintf("%q", v)
			}
			fmt.Fprintf(&b, "%s = %s\n", kv[i], v)
		}
		b.WriteString("\n")
	}
	for i := range n {
		app := fmt.Sprintf("%s-%d", apps[i%len(apps)], i)
		act := actions[i%3]
		note := fmt.Sprintf("bench rule %d", i)
		switch i % 14 {
		case 0: // another app, by name
			rule("app", app, "action", act, "note", note)
		case 1: // another app, by path, capped
			rule("app", fmt.Sprintf("/opt/%s/bin/%s", app, apps[i%len(apps)]), "action", "allow", "rate_in", "2MB/s",
				"rate_out", "500KB/s", "note", note)
		case 2: // another host, by name
			rule("host", fmt.Sprintf("ads%d.tracker.example", i), "action", "deny", "note", note)
		case 3: // another domain, wildcard
			rule("host", fmt.Sprintf("*.cdn%d.example.org", i), "action", act, "note", note)
		case 4: // another host, by IP
			rule("host", fmt.Sprintf("203.0.%d.%d", 113+i%2, i%250+1), "action", act, "note", note)
		case 5: // another network, IPv4 CIDR
			rule("host", fmt.Sprintf("10.%d.%d.0/24", i%256, i/256), "action", act, "note", note)
		case 6: // another network, IPv6 CIDR
			rule("host", fmt.Sprintf("2001:db8:%x::/48", i), "action", "deny", "note", note)
		case 7: // the bench network, other ports
			rule("host", "198.18.0.0/24", "port", otherPort(i), "action", act, "note", note)
		case 8: // another app, quota with a throttle when it runs out
			rule("app", app, "action", "allow", "quota", fmt.Sprintf("%dGB", 1+i%50), "period", "month",
				"reset_day", fmt.Sprint(1+i%28), "over", "throttle:500KB/s", "note", note)
		case 9: // another user, mail port
			rule("user", fmt.Sprint(1000+i), "port", "25", "action", "deny", "note", note)
		case 10: // an app by path to a wildcard domain, capped
			rule("app", fmt.Sprintf("/usr/lib/%s/%s", app, apps[i%len(apps)]), "host", fmt.Sprintf("*.video%d.example", i),
				"action", "allow", "rate_in", "1MB/s", "note", note)
		case 11: // another interface, daily quota
			rule("iface", fmt.Sprintf("wwan%d", i%8), "action", "allow", "quota", "500MB", "period", "day", "note", note)
		case 12: // any app, a port range elsewhere
			rule("port", fmt.Sprintf("%q", fmt.Sprintf("%d-%d", 8000+i%900, 8000+i%900+10)), "action", act, "note", note)
		case 13: // another app to a network, capped both ways
			rule("app", app, "host", fmt.Sprintf("172.%d.0.0/16", 16+i%16), "action", "allow", "rate", "10Mbit/s", "note", note)
		}
	}
	return b.String()
}

// otherPort is a port on which a rule for the bench network may sit: never the
// bench server's.
func otherPort(i int) string {
	p := 1 + (i*37)%65535
	if p == benchServerPort {
		p++
	}
	return fmt.Sprint(p)
}
