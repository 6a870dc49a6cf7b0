package part97

import (
	"crypto/ed25519"
	"errors"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/tidwall/gjson"

	"repeater/internal/httputil"
)

func TestValidCallsign(t *testing.T) {
	for _, c := range []struct {
		s  string
		ok bool
	}{
		{"K5DLQ", true}, {"k5dlq", true}, {"W1AW", true}, {"KN6PLV", true}, {"VE3ABC", true},
		{"G4XYZ", true}, {"2E0ABC", true}, {"9A1AA", true}, {"3DA0RU", true}, {"JA1XYZ", true},
		{"HB9ABC", true}, {"E51ABC", true}, {"4X4ABC", true}, {"K1A", true}, {"K5DLQ-1", true},
		{"k5dlq-12", true}, {"VK2ABC", true},
		{"alice", false}, {"12345", false}, {"K5", false}, {"KK", false}, {"", false},
		{"K5DLQ-", false}, {"K5DLQ-123", false}, {"K5DLQ.1", false}, {"K 5DLQ", false},
		{"KKKK5ABC", false}, {"K5ABCDE", false}, {"K51", false}, {"@k5dlq", false},
	} {
		if got := ValidCallsign(c.s); got != c.ok {
			t.Errorf("ValidCallsign(%q) = %v, want %v", c.s, got, c.ok)
		}
	}
}

func errcode(err error) string {
	var he *httputil.Error
	if errors.As(err, &he) {
		return he.Code
	}
	return ""
}

func TestPolicyRefusals(t *testing.T) {
	var off *Policy
	p, err := New(Options{Callsign: "k5dlq", RequireCallsign: true})
	if err != nil {
		t.Fatal(err)
	}
	if p.Callsign != "K5DLQ" {
		t.Errorf("callsign %q", p.Callsign)
	}
	for _, c := range []struct {
		typ, content string
		refused      bool
	}{
		{"m.room.encryption", `{"algorithm":"m.megolm.v1.aes-sha2"}`, true},
		{"m.room.encrypted", `{"algorithm":"m.megolm.v1.aes-sha2","ciphertext":"x"}`, true},
		{"m.room.message", `{"msgtype":"m.file","body":"a","file":{"url":"mxc://a/b","key":{}}}`, true},
		{"m.room.message", `{"msgtype":"m.image","body":"a","url":"mxc://a/b","info":{"thumbnail_file":{"url":"mxc://a/c"}}}`, true},
		{"m.room.message", `{"msgtype":"m.text","body":"CQ CQ de K5DLQ"}`, false},
		{"m.room.message", `{"msgtype":"m.file","body":"a","url":"mxc://a/b","file":"not an object"}`, false},
		{"m.room.name", `{"name":"Net"}`, false},
	} {
		err := p.CheckEvent(c.typ, []byte(c.content))
		if (err != nil) != c.refused {
			t.Errorf("%s %s: err %v, want refused=%v", c.typ, c.content, err, c.refused)
		}
		if err != nil && errcode(err) != "M_FORBIDDEN" {
			t.Errorf("%s: errcode %q", c.typ, errcode(err))
		}
		if off.CheckEvent(c.typ, []byte(c.content)) != nil {
			t.Errorf("mode off refused %s", c.typ)
		}
	}
	if err := p.CheckToDevice("m.room.encrypted"); errcode(err) != "M_FORBIDDEN" {
		t.Errorf("encrypted to-device: %v", err)
	}
	if err := p.CheckToDevice("m.room_key_request"); err != nil {
		t.Errorf("plain to-device refused: %v", err)
	}
	if errcode(p.CheckKeyBackup()) != "M_FORBIDDEN" || off.CheckKeyBackup() != nil {
		t.Error("key backup")
	}
	if errcode(p.CheckUsername("alice")) != "M_INVALID_USERNAME" || p.CheckUsername("k5dlq-2") != nil || off.CheckUsername("alice") != nil {
		t.Error("usernames")
	}
	loose, _ := New(Options{Callsign: "K5DLQ"})
	if loose.CheckUsername("alice") != nil {
		t.Error("require_callsign off still refused a name")
	}
}

func TestTrustedPeers(t *testing.T) {
	p, err := New(Options{Callsign: "K5DLQ", TrustedPeers: []string{"10.0.0.0/8", "n0call-pi.local.mesh", "127.0.0.0/8"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		server, addr string
		ok           bool
	}{
		{"x.local.mesh", "10.54.20.7:51234", true},
		{"x.local.mesh", "10.1.2.3", true},
		{"n0call-pi.local.mesh", "192.168.1.9:4000", true},
		{"N0CALL-PI.local.mesh", "", true},
		{"x.local.mesh", "192.168.1.9:4000", false},
		{"x.local.mesh", "127.0.0.1:9", true},
		{"evil.example", "203.0.113.5:443", false},
		{"evil.example", "", false},
	} {
		r := &Relay{Server: c.server}
		r.SetAddr(c.addr)
		if got := p.TrustedRelay(r); got != c.ok {
			t.Errorf("%s from %s: trusted %v, want %v", c.server, c.addr, got, c.ok)
		}
	}
	var off *Policy
	if off.TrustedRelay(&Relay{Server: "x"}) || p.TrustedRelay(nil) {
		t.Error("nil policy or relay trusted")
	}
	for _, bad := range []string{"10.0.0.0/33", "not a name!", ""} {
		if _, err := New(Options{TrustedPeers: []string{bad}}); err == nil {
			t.Errorf("trusted peer %q accepted", bad)
		}
	}
}

// Finish drops signatures and keeps the event ID (the reference hash
// leaves signatures out) and the content hash.
func TestFinishUnsigned(t *testing.T) {
	impl := gomatrixserverlib.MustGetRoomVersion("10")
	_, key, _ := ed25519.GenerateKey(nil)
	pe := gomatrixserverlib.ProtoEvent{SenderID: "@k5dlq:a.local.mesh", RoomID: "!r:a.local.mesh", Type: "m.room.message",
		PrevEvents: []string{"$p"}, AuthEvents: []string{"$a"}, Depth: 2, Content: []byte(`{"body":"73","msgtype":"m.text"}`)}
	ev, err := impl.NewEventBuilderFromProtoEvent(&pe).Build(time.Now(), "a.local.mesh", "ed25519:a", key)
	if err != nil {
		t.Fatal(err)
	}
	signing, _ := New(Options{Callsign: "K5DLQ"})
	if same, _ := signing.Finish(ev); !gjson.GetBytes(same.JSON(), "signatures").Exists() {
		t.Fatal("a signing node's event lost its signatures")
	}
	unsigned, _ := New(Options{Callsign: "K5DLQ", UnsignedEvents: true})
	out, err := unsigned.Finish(ev)
	if err != nil {
		t.Fatal(err)
	}
	if gjson.GetBytes(out.JSON(), "signatures").Exists() || !gjson.GetBytes(out.JSON(), "hashes.sha256").Exists() {
		t.Fatalf("unsigned event: %s", out.JSON())
	}
	if out.EventID() != ev.EventID() {
		t.Fatalf("event ID changed: %s -> %s", ev.EventID(), out.EventID())
	}
	// A receiver computes the same ID from the unsigned JSON, unredacted.
	again, err := impl.NewEventFromUntrustedJSON(out.JSON())
	if err != nil || again.EventID() != ev.EventID() || again.Redacted() {
		t.Fatalf("reparsed: %v %s redacted=%v", err, again.EventID(), again.Redacted())
	}
	if len(out.JSON()) >= len(ev.JSON()) {
		t.Errorf("unsigned %d bytes, signed %d", len(out.JSON()), len(ev.JSON()))
	}
}
