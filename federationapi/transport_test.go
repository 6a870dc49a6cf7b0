package federationapi

import "testing"

func TestOutboundAddressRules(t *testing.T) {
	closed, _ := newTransport(nil, false, false, []string{"10.0.0.0/8"}, []string{"10.9.0.0/16", "203.0.113.0/24"})
	open, _ := newTransport(nil, false, true, nil, []string{"203.0.113.0/24"})
	for _, c := range []struct {
		t    *transport
		addr string
		ok   bool
	}{
		{closed, "93.184.216.34:8448", true},
		{closed, "127.0.0.1:8448", false},
		{closed, "192.168.1.5:8448", false},
		{closed, "10.1.2.3:8008", true},  // mesh range explicitly allowed
		{closed, "10.9.1.1:8008", false}, // ... but this part denied
		{closed, "203.0.113.7:8448", false},
		{closed, "[::1]:8448", false},
		{closed, "[fe80::1]:8448", false},
		{open, "127.0.0.1:8448", true},
		{open, "203.0.113.7:8448", false}, // deny wins even on test networks
	} {
		err := c.t.checkAddr("tcp", c.addr, nil)
		if (err == nil) != c.ok {
			t.Errorf("%s: err %v, want allowed=%v", c.addr, err, c.ok)
		}
	}
}
