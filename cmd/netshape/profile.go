package main

import (
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"runtime/trace"
)

// startCPUProfile profiles the process into file until stop is called.
func startCPUProfile(file string) (stop func(), err error) {
	return startToFile("--cpu-profile", file, pprof.StartCPUProfile, pprof.StopCPUProfile)
}

// startTrace writes a Go execution trace of the process into file until stop
// is called: where goroutines wait, wake and hand off (go tool trace).
func startTrace(file string) (stop func(), err error) {
	return startToFile("--trace", file, trace.Start, trace.Stop)
}

// startToFile creates file and runs start on it; the returned stop ends it
// and closes the file. flag names the option in errors.
func startToFile(flag, file string, start func(io.Writer) error, end func()) (stop func(), err error) {
	f, err := os.Create(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	if err := start(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	return func() {
		end()
		f.Close()
	}, nil
}
