package bpfacct

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

const ifListSysctl = unix.NET_RT_IFLIST2

func ifListLayoutHere() ifListLayout {
	l := darwinIfList()
	// Compile-time checks that the documented offsets match x/sys/unix's
	// generated struct (an out-of-range constant index fails the build).
	var m unix.IfMsghdr2
	_ = [1]int{}[unsafe.Offsetof(m.Data)-32]
	_ = [1]int{}[unsafe.Sizeof(m)-160]
	_ = [1]int{}[unsafe.Offsetof(m.Data.Ibytes)-64]
	_ = [1]int{}[unsafe.Offsetof(m.Data.Obytes)-72]
	_ = [1]int{}[unsafe.Offsetof(m.Data.Ipackets)-24]
	_ = [1]int{}[unsafe.Offsetof(m.Data.Iqdrops)-96]
	return l
}
