package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// runCgroup is a cgroup v2 group `netshape run` puts itself in before it
// starts the command, so the command and every descendant, even one that
// re-parents itself, can be found and killed.
type runCgroup struct {
	root string // where cgroup2 is mounted
	orig string // our group before, relative to root
	rel  string // the new group, relative to root, as /proc/PID/cgroup shows it
}

// cgroup2Root is where the cgroup v2 hierarchy is mounted: /sys/fs/cgroup, or
// /sys/fs/cgroup/unified on hybrid systems.
func cgroup2Root() string {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[2] == "cgroup2" {
			return f[1]
		}
	}
	return ""
}

// ownCgroup is this process's cgroup v2 path ("/a/b"), from its "0::" line.
func ownCgroup() (string, bool) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			return p, true
		}
	}
	return "", false
}

// joinOwnCgroup creates the group and moves this process into it. Without
// cgroup v2 or the right to write it, it returns nil and netshape follows the
// process tree instead.
func joinOwnCgroup() *runCgroup {
	root := cgroup2Root()
	cur, ok := ownCgroup()
	if root == "" || !ok {
		return nil
	}
	parent := cur // a child of the root group, or a sibling of ours
	if cur != "/" {
		parent = filepath.Dir(cur)
	}
	g := &runCgroup{root: root, orig: cur, rel: filepath.Join(parent, fmt.Sprintf("netshape-run-%d", os.Getpid()))}
	if err := os.Mkdir(filepath.Join(root, g.rel), 0o755); err != nil {
		return nil
	}
	if err := g.move(g.rel); err != nil {
		os.Remove(filepath.Join(root, g.rel))
		return nil
	}
	return g
}

func (g *runCgroup) move(rel string) error {
	return os.WriteFile(filepath.Join(g.root, rel, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0)
}

// path is the group as the daemon sees it in /proc/PID/cgroup; "" for none.
func (g *runCgroup) path() string {
	if g == nil {
		return ""
	}
	return g.rel
}

// kill kills every process left in the group (cgroup.kill, Linux 5.14+),
// after moving this process out.
func (g *runCgroup) kill() {
	if g == nil {
		return
	}
	g.move(g.orig)
	os.WriteFile(filepath.Join(g.root, g.rel, "cgroup.kill"), []byte("1"), 0)
}

// remove moves this process back and removes the group once it is empty.
func (g *runCgroup) remove() {
	if g == nil {
		return
	}
	g.move(g.orig)
	for i := 0; i < 40; i++ {
		if os.Remove(filepath.Join(g.root, g.rel)) == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}
