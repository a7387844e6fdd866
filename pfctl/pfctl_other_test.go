//go:build !darwin && !freebsd

package pfctl

import (
	"errors"
	"testing"
)

func TestNewUnsupported(t *testing.T) {
	p, err := New(Config{LoopGID: 399}, nil)
	if p != nil || !errors.Is(err, ErrUnsupported) {
		t.Errorf("New on this OS = %v, %v; want ErrUnsupported", p, err)
	}
	if err := ioctlNatlook(0, 0, make([]byte, 84)); !errors.Is(err, ErrUnsupported) {
		t.Errorf("ioctlNatlook = %v", err)
	}
}
