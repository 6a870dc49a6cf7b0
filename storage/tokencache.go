package storage

import (
	"sync/atomic"

	"repeater/internal/lru"
)

// tokenCache remembers which device owns an access-token hash, so that an
// authenticated request costs no database read. Every write that removes or
// replaces tokens drops the account's entries after committing, and bumps a
// generation first: a lookup that read the database before that commit
// sees the generation changed and does not store its (stale) answer.
type tokenCache struct {
	entries *lru.Cache[string, Device]
	gen     atomic.Uint64
}

func newTokenCache(size int) *tokenCache {
	return &tokenCache{entries: lru.New[string, Device](size)}
}

func (c *tokenCache) get(hash string) (*Device, bool) {
	d, ok := c.entries.Get(hash)
	if !ok {
		return nil, false
	}
	return &d, true
}

// putIfCurrent caches d unless an invalidation began since gen was read.
func (c *tokenCache) putIfCurrent(hash string, d *Device, gen uint64) {
	if c.gen.Load() == gen {
		c.entries.Put(hash, *d)
		if c.gen.Load() != gen { // an invalidation raced the Put
			c.entries.RemoveIf(func(e Device) bool { return e.Localpart == d.Localpart })
		}
	}
}

// invalidate drops every cached token of an account; call it after the
// write that changed its devices has committed.
func (c *tokenCache) invalidate(localpart string) {
	c.gen.Add(1)
	c.entries.RemoveIf(func(e Device) bool { return e.Localpart == localpart })
}
