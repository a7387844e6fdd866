package main

import (
	"bytes"
	"fmt"
	"math"
	"strconv"
)

// USER_HZ: the unit of /proc/stat and /proc/PID/stat times; 100 on every
// Linux ABI Go supports.
const clockTicks = 100

// cpuTimes is the whole machine's CPU time from /proc/stat's first line, in
// clock ticks: busy is user, nice, system, irq and softirq (everything the
// VM ran: the bench client and server, the relay, the kernel's packet work
// in softirqs, and any other tenant); idle is idle and iowait. Steal (time
// the hypervisor gave to other guests) is in neither.
type cpuTimes struct {
	busy, idle uint64
}

// parseProcStat reads the aggregate "cpu" line of /proc/stat.
func parseProcStat(b []byte) (cpuTimes, error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) < 8 || string(f[0]) != "cpu" {
		return cpuTimes{}, fmt.Errorf("/proc/stat: first line %q is not the aggregate cpu line", line)
	}
	var v [7]uint64 // user nice system idle iowait irq softirq
	for i := range v {
		n, err := strconv.ParseUint(string(f[i+1]), 10, 64)
		if err != nil {
			return cpuTimes{}, fmt.Errorf("/proc/stat: cpu field %d: %w", i+1, err)
		}
		v[i] = n
	}
	return cpuTimes{busy: v[0] + v[1] + v[2] + v[5] + v[6], idle: v[3] + v[4]}, nil
}

// since returns the machine's busy CPU seconds between t0 and t and the
// fraction of that time it was busy (busy / (busy + idle)).
func (t cpuTimes) since(t0 cpuTimes) (busySeconds, busyFrac float64) {
	if t == (cpuTimes{}) || t0 == (cpuTimes{}) || t.busy < t0.busy || t.idle < t0.idle || t == t0 {
		// A reading failed (zeros: a failed first one would count the
		// time since boot), or t is not later, or no tick passed. NaN,
		// which the summary drops, not a figure it would take for a
		// measurement.
		return math.NaN(), math.NaN()
	}
	b, i := float64(t.busy-t0.busy), float64(t.idle-t0.idle)
	return b / clockTicks, b / (b + i)
}
