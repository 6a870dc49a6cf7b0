package roomserver

import (
	"bytes"
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// The fast builder must produce exactly the bytes gomatrixserverlib's
// EventBuilder.Build produces (same hashes, signature and event ID), for
// every room version it accepts.
func TestFastBuildMatchesLibrary(t *testing.T) {
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))
	now := time.UnixMilli(1764000000123)
	contents := []string{
		`{"body":"hello","msgtype":"m.text"}`,
		`{"body":"h\u00e9llo \"quoted\" <tag> & \\ \n tab\t","msgtype":"m.text","n":-42,"nested":{"z":[1,2,{"b":true,"a":null}],"a":"x"}}`,
		`{}`,
		`{"emoji":"🎉","big":9007199254740991}`,
	}
	types := []string{"m.room.message", "org.example.custom", "m.reaction", "m.room.encrypted"}
	tested := 0
	for _, ver := range []gomatrixserverlib.RoomVersion{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"} {
		impl := gomatrixserverlib.MustGetRoomVersion(ver)
		for _, typ := range types {
			if !fastBuildable(impl, typ, nil, "") {
				continue
			}
			for i, content := range contents {
				prev := []string{"$AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcde"}
				if i%2 == 1 {
					prev = append(prev, "$second-prev-event_id")
				}
				pe := gomatrixserverlib.ProtoEvent{SenderID: "@alice:test.local", RoomID: "!room:test.local", Type: typ,
					PrevEvents: prev, Depth: int64(10 + i), Content: []byte(content)}
				eb := impl.NewEventBuilderFromProtoEvent(&pe)
				eb.AuthEvents = []string{"$create", "$power", "$member"}
				want, err := eb.Build(now, "test.local", "ed25519:a", key)
				if err != nil {
					t.Fatal(err)
				}
				canonical, err := gomatrixserverlib.EnforcedCanonicalJSON([]byte(content), ver)
				if err != nil {
					t.Fatal(err)
				}
				got, id, ok := fastBuild(impl, &pe, []string{"$create", "$power", "$member"}, canonical, now, spec.ServerName("test.local"), "ed25519:a", key)
				if !ok {
					t.Fatalf("v%s %s: fast path refused", ver, typ)
				}
				if !bytes.Equal(got, want.JSON()) || id != want.EventID() {
					t.Fatalf("v%s %s content %d:\n fast %s %s\n lib  %s %s", ver, typ, i, id, got, want.EventID(), want.JSON())
				}
				// The result verifies as any received event would.
				parsed, err := impl.NewEventFromUntrustedJSON(got)
				if err != nil || parsed.EventID() != id {
					t.Fatalf("v%s: parse: %v", ver, err)
				}
				tested++
			}
		}
	}
	if tested == 0 {
		t.Fatal("no room version took the fast path")
	}
	// What the fast path must leave to the library.
	v10 := gomatrixserverlib.MustGetRoomVersion("10")
	sk := ""
	for _, c := range []struct {
		typ      string
		stateKey *string
		redacts  string
	}{{"m.room.topic", &sk, ""}, {"m.room.redaction", nil, "$x"}, {"m.room.member", nil, ""}, {"m.room.power_levels", nil, ""}, {"bad\"type", nil, ""}} {
		if fastBuildable(v10, c.typ, c.stateKey, c.redacts) {
			t.Errorf("%s took the fast path", c.typ)
		}
	}
	if fastBuildable(gomatrixserverlib.MustGetRoomVersion("3"), "m.room.message", nil, "") {
		t.Error("room version 3 (standard base64 event IDs) took the fast path")
	}
}
