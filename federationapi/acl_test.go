package federationapi

import (
	"testing"

	"github.com/tidwall/gjson"
)

func TestACL(t *testing.T) {
	acl := gjson.Parse(`{"allow":["*.example.org","good.test"],"deny":["bad.example.org","*.evil.*"],"allow_ip_literals":false}`)
	for server, want := range map[string]bool{
		"a.example.org":      true,
		"a.example.org:8448": true,
		"bad.example.org":    false,
		"good.test":          true,
		"GOOD.TEST":          true,
		"x.evil.example.org": false,
		"other.test":         false,
		"1.2.3.4:8448":       false,
		"[::1]:8448":         false,
	} {
		if got := aclAllows(acl, server); got != want {
			t.Errorf("%s: got %v, want %v", server, got, want)
		}
	}
	if !aclAllows(gjson.Parse(`{"allow":["*"]}`), "10.0.0.1") {
		t.Error("IP literals are allowed unless allow_ip_literals is false")
	}
	if aclAllows(gjson.Parse(`{}`), "anything.test") {
		t.Error("an ACL with no allow list allows nobody")
	}
}
