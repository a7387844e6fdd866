package pfctl_test

import (
	"github.com/netshape/netshape/daemon"
	"github.com/netshape/netshape/pfctl"
)

// *PF must stay a daemon.Redirector (external test package: no import cycle
// when daemon imports pfctl).
var _ daemon.Redirector = (*pfctl.PF)(nil)
