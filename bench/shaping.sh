#!/bin/sh
# bench/shaping.sh [--quick]
#
# Shaping accuracy side by side, in one run: a download capped at the same rate
# by netshape (a host rule), by Linux tc tbf on the server's veth, and by
# trickle (LD_PRELOAD, userspace), at several rates. Prints achieved/configured
# ratios (1.000 is perfect) and writes bench/out/shaping-<time>.json.
# Everything runs in network namespaces it creates and deletes (tbs<id>...).
# Needs root; installs trickle and curl from Debian packages when missing.
set -eu
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/shaping.sh builds network namespaces: run it as root" >&2; exit 1; }

quick=0
[ "${1:-}" = "--quick" ] && quick=1

missing=""
command -v trickle >/dev/null || missing="$missing trickle"
command -v curl >/dev/null || missing="$missing curl"
command -v python3 >/dev/null || missing="$missing python3"
if [ -n "$missing" ]; then
	echo "installing:$missing" >&2
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
export CGO_ENABLED=0
mkdir -p bin bench/out
go build -trimpath -o bin/netshape ./cmd/netshape

id=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
C=tbs${id}c S=tbs${id}s VC=v${id}c VS=v${id}s
tmp=$(mktemp -d)
cleanup() {
	[ -f "$tmp/pid" ] && kill "$(cat "$tmp/pid")" 2>/dev/null || true
	[ -f "$tmp/http" ] && kill "$(cat "$tmp/http")" 2>/dev/null || true
	sleep 0.3
	ip netns del "$C" 2>/dev/null || true
	ip netns del "$S" 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

ip netns add "$C"; ip netns add "$S"
ip -n "$C" link set lo up; ip -n "$S" link set lo up
ip link add "$VC" netns "$C" type veth peer name "$VS" netns "$S"
ip -n "$C" addr add 198.18.0.1/24 dev "$VC"; ip -n "$S" addr add 198.18.0.2/24 dev "$VS"
ip -n "$C" link set "$VC" up; ip -n "$S" link set "$VS" up

# Rates in bytes per second; each transfer lasts about $secs seconds.
if [ $quick = 1 ]; then rates="262144 4194304"; secs=3; else rates="32768 262144 1048576 4194304 33554432 104857600"; secs=6; fi
mkdir -p "$tmp/www"
# One file per rate, sized for $secs seconds (python's http.server ignores Range).
for r in $rates; do truncate -s $((r * secs)) "$tmp/www/blob-$r"; done
ip netns exec "$S" python3 -m http.server 8080 --bind 198.18.0.2 --directory "$tmp/www" >/dev/null 2>&1 &
echo $! > "$tmp/http"
sleep 0.5

sock=$tmp/ctl.sock
N="bin/netshape --socket $sock"
# netshape runs throughout; the rule exists only in the netshape rounds.
ip netns exec "$C" bin/netshape start --state-dir "$tmp/state" --socket "$sock" --capture=false --ptr=false >"$tmp/daemon.log" 2>&1 &
echo $! > "$tmp/pid"
for _ in $(seq 50); do $N status >/dev/null 2>&1 && break; sleep 0.1; done

# fetch RATE [wrapper...]: downloads blob-RATE and prints the speed in bytes per second.
fetch() {
	f=$1; shift
	ip netns exec "$C" "$@" curl -s -o /dev/null -w '%{speed_download}' "http://198.18.0.2:8080/blob-$f"
}

echo "rate_Bps,contender,achieved_Bps,ratio" > "$tmp/csv"
for r in $rates; do
	# netshape: a host cap.
	rid=$($N rule add --host 198.18.0.2 --action allow --rate-in "${r}B/s")
	a=$(fetch $r)
	$N rule rm "$rid"
	echo "$r,netshape,$a" >> "$tmp/csv"
	# tc tbf on the server's egress (the download direction).
	ip netns exec "$S" tc qdisc add dev "$VS" root tbf rate "$((r * 8))bit" burst "$(( r / 10 > 3200 ? r / 10 : 3200 ))" latency 200ms
	a=$(fetch $r)
	ip netns exec "$S" tc qdisc del dev "$VS" root
	echo "$r,tc-tbf,$a" >> "$tmp/csv"
	# trickle: userspace, per process (-s standalone, -d in KB/s).
	a=$(fetch $r trickle -s -d $((r / 1024)))
	echo "$r,trickle,$a" >> "$tmp/csv"
done

out=bench/out/shaping-$(date -u +%Y%m%dT%H%M%SZ).json
python3 - "$tmp/csv" "$out" <<'PY'
import csv, json, sys, platform, os
rows = []
for r in list(csv.reader(open(sys.argv[1])))[1:]:
    rate, who, got = int(r[0]), r[1], float(r[2])
    rows.append({"rate": rate, "contender": who, "achieved": got, "ratio": got / rate})
json.dump({"machine": {"nproc": os.cpu_count(), "kernel": platform.release()}, "results": rows}, open(sys.argv[2], "w"), indent=1)
print("%12s  %10s  %10s  %10s" % ("rate B/s", "netshape", "tc tbf", "trickle"))
by = {}
for x in rows:
    by.setdefault(x["rate"], {})[x["contender"]] = x["ratio"]
for rate in sorted(by):
    d = by[rate]
    print("%12d  %10.3f  %10.3f  %10.3f" % (rate, d.get("netshape", 0), d.get("tc-tbf", 0), d.get("trickle", 0)))
print("ratios are achieved / configured; JSON in " + sys.argv[2])
PY
