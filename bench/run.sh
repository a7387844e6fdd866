#!/bin/sh
# bench/run.sh [--quick] [nsbench run flags...]
#
# Benchmarks netshape (without rules, and with 1,000 rules: netshape-r) against
# direct connections and peer relays (HAProxy as a transparent relay under the
# same kind of nftables redirect; a bare Go splice relay, gobare; without
# --quick an epoll event-loop Go relay, goloop, and its C twin, cloop; HAProxy and socat as plain
# relays with -contenders) inside network namespaces it creates
# and deletes (named tb<id>...). It never touches this machine's own network
# namespace.
# Results: a table on stdout and bench/out/bench-<time>.json. Needs root.
set -eu
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "bench/run.sh builds network namespaces: run it as root (sudo make bench)" >&2; exit 1; }
command -v go >/dev/null || { echo "Go is required" >&2; exit 1; }

# Peers and tools, from Debian packages when missing.
missing=""
command -v haproxy >/dev/null || missing="$missing haproxy"
command -v socat >/dev/null || missing="$missing socat"
command -v nft >/dev/null || missing="$missing nftables"   # only the HAProxy contender's rules use nft
command -v ip >/dev/null || missing="$missing iproute2"
if [ -n "$missing" ]; then
	command -v apt-get >/dev/null || { echo "install:$missing" >&2; exit 1; }
	echo "installing:$missing" >&2
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
# The Debian haproxy package may start a system-wide service; the benchmark runs its own instances.

export CGO_ENABLED=0
mkdir -p bin bench/out
go build -trimpath -o bin/netshape ./cmd/netshape
go build -trimpath -o bin/nsbench ./bench/cmd/nsbench
# The C floor relay (cloop contender, full runs): where a C compiler is there.
cloop=""
if command -v cc >/dev/null && cc -O2 -pthread -o bin/cloop bench/cloop/cloop.c; then
	cloop="-cloop $PWD/bin/cloop"
else
	echo "no C compiler: the cloop reference relay is left out" >&2
fi

id=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
cleanup() {
	for ns in $(ip netns list | awk '{print $1}' | grep "^tb$id" || true); do ip netns del "$ns" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

args=""
kind=full
for a in "$@"; do
	case "$a" in
	--quick) args="$args -quick"; kind=quick ;;
	*) args="$args $a" ;;
	esac
done
# The last run of the same kind (quick or full), to compare this one with.
runs() {
	if [ "$kind" = quick ]; then ls bench/out/bench-*-quick.json 2>/dev/null
	else ls bench/out/bench-*.json 2>/dev/null | grep -v -- '-quick\.json$'; fi
}
prev=$(runs | tail -1)
# shellcheck disable=SC2086
bin/nsbench run -id "$id" -netshape bin/netshape -out bench/out $cloop $args
new=$(runs | tail -1)
if [ -n "$prev" ] && [ "$new" != "$prev" ]; then
	echo
	echo "Compared with the previous $kind run ($prev; nsbench compare, noise included):"
	bin/nsbench compare "$prev" "$new" || echo "(netshape looks worse than in $prev: repeat the run before believing it)"
fi
