//go:build !linux

package bpfacct

import "fmt"

func runHelper(mode string) int {
	fmt.Println("test helpers run on Linux only:", mode)
	return 2
}
