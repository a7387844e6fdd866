//go:build !linux

package main

import "errors"

func run([]string) error {
	return errors.New("the benchmark run needs Linux network namespaces; the load generators (serve, tput, lat, rate, idle, probe) work here")
}

func latmix([]string) error {
	return errors.New("the interleaved latency test enters network namespaces: Linux only")
}
