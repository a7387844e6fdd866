//go:build !linux

package bpfacct

import (
	"errors"
	"time"
)

var errBPFRefused = errors.New("eBPF socket filters exist on Linux only")

func probeKernelCounting() error { return errBPFRefused }

func openKernelCounter(in ifaceInfo, maxRemotes int, passDNS bool, poll time.Duration) (kernelSource, error) {
	return nil, errBPFRefused
}
