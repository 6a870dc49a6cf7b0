package roomserver

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/tidwall/gjson"
)

func TestUpgradedPowerLevels(t *testing.T) {
	js := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	// Levels written as strings (room versions before 10) become integers;
	// the upgrader starts at the highest level in use and ends at their own.
	src := &upgradeSource{powerLevels: []byte(`{"users":{"@a:x":"50","@b:x":120},"events":{"m.room.name":"60"},"ban":50,"custom":"kept"}`), creators: map[string]bool{}}
	initial, final := upgradedPowerLevels(src, "@a:x", nil, false)
	if got := js(final); got != `{"ban":50,"custom":"kept","events":{"m.room.name":60},"users":{"@a:x":50,"@b:x":120}}` {
		t.Fatalf("final %s", got)
	}
	if got := js(initial["users"]); got != `{"@a:x":120,"@b:x":120}` {
		t.Fatalf("initial users %s", got)
	}
	// To a version with privileged creators: the creators leave the map.
	initial, final = upgradedPowerLevels(src, "@a:x", []string{"@b:x"}, true)
	if js(initial) != js(final) || js(final["users"]) != `{}` {
		t.Fatalf("privileged: %s / %s", js(initial), js(final))
	}
	// From one: the old creators keep 100; no power levels at all means
	// the upgrader had 100.
	src = &upgradeSource{powerLevels: []byte(`{"users":{"@c:x":10}}`), creators: map[string]bool{"@a:x": true}}
	if _, final = upgradedPowerLevels(src, "@a:x", nil, false); js(final["users"]) != `{"@a:x":100,"@c:x":10}` {
		t.Fatalf("from privileged: %s", js(final))
	}
	if initial, final = upgradedPowerLevels(&upgradeSource{}, "@a:x", nil, false); js(final) != `{"users":{"@a:x":100}}` || js(initial) != js(final) {
		t.Fatalf("no power levels: %s / %s", js(initial), js(final))
	}
}

// An upgrade through the roomserver alone, on every dialect: tombstone,
// predecessor, state and the old room's restricted power levels.
func TestUpgradeRoom(t *testing.T) {
	eachDialect(t, func(t *testing.T, s *Server) {
		ctx := context.Background()
		alice := "@alice:test.local"
		name := "n"
		old, err := s.CreateRoom(ctx, alice, CreatorProfile{}, &CreateRoomRequest{Preset: "public_chat", Name: &name}, "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.UpgradeRoom(ctx, old, "@bob:test.local", "11", CreatorProfile{}, nil); err == nil {
			t.Fatal("a non-member upgraded the room")
		}
		newID, err := s.UpgradeRoom(ctx, old, alice, "11", CreatorProfile{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		ts, err := s.CurrentStateEvent(ctx, old, mRoomTombstone, "")
		if err != nil || ts == nil || gjson.GetBytes(ts.JSON, "content.replacement_room").Str != newID {
			t.Fatalf("tombstone %v %v", ts, err)
		}
		create, _ := s.CurrentStateEvent(ctx, newID, "m.room.create", "")
		if gjson.GetBytes(create.JSON, "content.predecessor.event_id").Str != ts.EventID {
			t.Fatalf("create %s", create.JSON)
		}
		if n, _ := s.CurrentStateEvent(ctx, newID, "m.room.name", ""); n == nil || gjson.GetBytes(n.JSON, "content.name").Str != "n" {
			t.Fatal("name not copied")
		}
		pl, _ := s.CurrentStateEvent(ctx, old, "m.room.power_levels", "")
		if gjson.GetBytes(pl.JSON, "content.events_default").Int() != 50 || gjson.GetBytes(pl.JSON, "content.invite").Int() != 50 {
			t.Fatalf("old power levels %s", pl.JSON)
		}
		if m, _ := s.Membership(ctx, newID, alice); m != "join" {
			t.Fatalf("alice in the new room: %q", m)
		}
	})
}
