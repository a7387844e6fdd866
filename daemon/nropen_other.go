//go:build !linux

package daemon

// nrOpenPath is empty where no file holds the kernel's open-file ceiling:
// raiseFileLimit then asks for what --max-conns needs and takes what it gets.
const nrOpenPath = ""
