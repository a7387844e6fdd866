//go:build !linux

package procmap

// bpfHelper: the BPF fast path exists only on Linux.
func bpfHelper() int { return 2 }
