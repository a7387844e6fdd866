package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
)

// startCPUProfile profiles the process into file until stop is called.
func startCPUProfile(file string) (stop func(), err error) {
	return startToFile("--cpu-profile", file, pprof.StartCPUProfile, pprof.StopCPUProfile)
}

// startMemProfile writes, when stop is called, where the process allocated
// since it started (go tool pprof -sample_index=alloc_objects): which code
// feeds the garbage collector per connection. The file is created at once, so
// a bad path fails the start rather than the stop.
func startMemProfile(file string) (stop func(), err error) {
	var w io.Writer
	return startToFile("--mem-profile", file,
		func(f io.Writer) error { w = f; return nil },
		func() {
			runtime.GC() // the profile shows allocations up to the last GC
			if err := pprof.Lookup("allocs").WriteTo(w, 0); err != nil {
				fmt.Fprintln(os.Stderr, "--mem-profile:", err)
			}
		})
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
