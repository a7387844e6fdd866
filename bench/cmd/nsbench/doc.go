// Command nsbench is netshape's benchmark harness (run it through bench/run.sh).
//
// `nsbench run` (Linux, root) builds a server network namespace and one client
// namespace per contender (all named tb<id>…), starts the contenders —
// direct, netshape (nft redirect + relay), HAProxy as a transparent relay
// under an equivalent nft redirect, HAProxy and socat as plain relays — and
// measures, interleaved within each repetition: single- and 8-stream
// throughput, connection rate, connect + 1-byte round-trip latency, relay CPU
// seconds per GB, and relay RSS per idle connection. It prints a table of
// ratios to direct and writes the raw samples and summaries as JSON.
//
// The other subcommands are the load generators and the server it runs
// inside the namespaces: serve, tput, lat, rate, idle, probe.
package main
