package sniff_test

import (
	"errors"
	"fmt"

	"github.com/netshape/netshape/proxy/sniff"
)

func ExampleDetect() {
	first := []byte("GET /watch HTTP/1.1\r\nHost: www.YouTube.com:80\r\n")
	for _, n := range []int{10, len(first)} {
		host, source, err := sniff.Detect(first[:n])
		switch {
		case errors.Is(err, sniff.ErrNeedMore):
			fmt.Println("read more")
		case err != nil:
			fmt.Println("no name:", err)
		default:
			fmt.Println(host, source)
		}
	}
	// Output:
	// read more
	// www.youtube.com http
}
