package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: nsbench run|compare|serve|tput|lat|latmix|rate|idle|probe|bare|loop|policy [flags] (see bench/run.sh)")
		os.Exit(2)
	}
	cmds := map[string]func([]string) error{
		"run": run, "compare": compare, "serve": serve, "tput": tput, "lat": lat, "latmix": latmix, "rate": rate, "idle": idle, "probe": probe, "bare": bare, "loop": loop, "policy": policyCmd,
	}
	f, ok := cmds[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "nsbench: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
	if err := f(os.Args[2:]); err != nil {
		fmt.Fprintln(os.Stderr, "nsbench:", err)
		os.Exit(1)
	}
}
