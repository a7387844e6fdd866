package procmap

import (
	"os/user"
	"strconv"
	"sync"
)

// userCache maps uids to user names. os/user reads /etc/passwd when cgo is
// off; the answer (also "no such user") is cached, the cache is bounded.
type userCache struct {
	mu    sync.Mutex
	max   int
	names map[int]string
	look  func(uid string) (*user.User, error)
}

func newUserCache(max int) *userCache {
	return &userCache{max: max, names: make(map[int]string), look: user.LookupId}
}

func (c *userCache) name(uid int) string {
	c.mu.Lock()
	n, ok := c.names[uid]
	c.mu.Unlock()
	if ok {
		return n
	}
	if u, err := c.look(strconv.Itoa(uid)); err == nil {
		n = u.Username
	}
	c.mu.Lock()
	if len(c.names) >= c.max {
		clear(c.names)
	}
	c.names[uid] = n
	c.mu.Unlock()
	return n
}
