// Command nsbench is netshape's benchmark harness (run it through bench/run.sh).
//
// `nsbench run` (Linux, root) builds a server network namespace and one client
// namespace per contender (all named tb<id>…), starts the contenders and
// measures, interleaved within each repetition: single- and 8-stream
// throughput, connection rate and relay CPU per connection, connect + 1-byte
// round-trip latency, relay CPU seconds per GB, and relay RSS per idle
// connection. It prints a table of
// ratios to direct and the targets, and writes the raw samples and
// summaries as JSON.
//
// Contenders by default: direct; netshape (nft redirect + relay, no rules);
// netshape-r (the same with 1,000 rules from a policy file that match none of
// the bench traffic, so every flow is evaluated and allowed by the default;
// the run checks that the rules loaded and that procmap named the bench
// client); haproxy-t (HAProxy as a transparent relay under an equivalent nft
// redirect, the fair peer); gobare (`nsbench bare`, the bare Go
// splice relay under the same kind of redirect, a reference); without -quick
// also goloop (`nsbench loop`, an epoll event-loop Go relay, to show what that
// design buys). On request (-contenders): haproxy and socat as plain relays.
//
// `nsbench compare OLD.json NEW.json` lines two runs up metric by metric
// (ratios to direct, added latency, the relay's CPU and memory) and fails
// when netshape got worse by more than -tolerance and beyond the spread the
// old run saw between its own repetitions.
//
// The other subcommands are the load generators, the server and the bare
// relays it runs inside the namespaces: serve, tput, lat, latmix, rate, idle,
// probe, bare, loop.
package main
