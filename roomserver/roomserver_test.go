package roomserver

import (
	"context"
	"crypto/ed25519"
	"io"
	"log/slog"
	"testing"

	"github.com/tidwall/gjson"

	"repeater/storage"
	"repeater/storage/storagetest"
)

func newTestServer(t *testing.T, dsn string) *Server {
	t.Helper()
	db, err := storage.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	_, key, _ := ed25519.GenerateKey(nil)
	return New(Config{ServerName: "test.local", KeyID: "ed25519:t", PrivateKey: key, DefaultVersion: "10"},
		db, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

func eachDialect(t *testing.T, fn func(t *testing.T, s *Server)) {
	for name, dsn := range storagetest.Dialects(t) {
		t.Run(name, func(t *testing.T) { fn(t, newTestServer(t, dsn)) })
	}
}

// Every stable room version can be created, written to and redacted in.
func TestAllStableRoomVersions(t *testing.T) {
	eachDialect(t, func(t *testing.T, s *Server) {
		ctx := context.Background()
		alice, bob := "@alice:test.local", "@bob:test.local"
		for _, v := range SupportedVersions {
			ver := string(v)
			t.Run("v"+ver, func(t *testing.T) {
				name := "room " + ver
				roomID, err := s.CreateRoom(ctx, alice, CreatorProfile{DisplayName: "Alice"}, &CreateRoomRequest{RoomVersion: ver, Preset: "public_chat", Name: &name}, "")
				if err != nil {
					t.Fatalf("create: %v", err)
				}
				if _, err := s.Join(ctx, roomID, bob, CreatorProfile{}, nil); err != nil {
					t.Fatalf("join: %v", err)
				}
				msg, err := s.Send(ctx, roomID, bob, "m.room.message", nil, map[string]any{"body": "hello", "msgtype": "m.text"}, SendOpts{})
				if err != nil {
					t.Fatalf("send: %v", err)
				}
				// Bob may not change the name (state_default 50).
				empty := ""
				if _, err := s.Send(ctx, roomID, bob, "m.room.name", &empty, map[string]any{"name": "x"}, SendOpts{}); err == nil {
					t.Fatal("bob changed the room name without power")
				}
				// Alice (moderator/creator) redacts Bob's message.
				content := map[string]any{}
				if ver == "11" || ver == "12" {
					content["redacts"] = msg.EventID
				}
				if _, err := s.Send(ctx, roomID, alice, "m.room.redaction", nil, content, SendOpts{Redacts: msg.EventID}); err != nil {
					t.Fatalf("redact: %v", err)
				}
				stored, err := s.db.EventByID(ctx, msg.EventID)
				if err != nil {
					t.Fatal(err)
				}
				if gjson.GetBytes(s.ClientJSON(ctx, stored), "content.body").Exists() {
					t.Fatalf("redacted event still has its body")
				}
				if m, _ := s.Membership(ctx, roomID, bob); m != "join" {
					t.Fatalf("bob's membership %q", m)
				}
				n, _ := s.CurrentStateEvent(ctx, roomID, "m.room.name", "")
				if n == nil || gjson.GetBytes(n.JSON, "content.name").Str != name {
					t.Fatalf("room name not in current state")
				}
			})
		}
	})
}

func TestHistoryVisibility(t *testing.T) {
	eachDialect(t, func(t *testing.T, s *Server) {
		ctx := context.Background()
		alice, bob := "@alice:test.local", "@bob:test.local"
		for _, tc := range []struct {
			vis        string
			seesBefore bool
		}{{"shared", true}, {"joined", false}, {"invited", false}, {"world_readable", true}} {
			t.Run(tc.vis, func(t *testing.T) {
				roomID, err := s.CreateRoom(ctx, alice, CreatorProfile{}, &CreateRoomRequest{Preset: "public_chat",
					InitialState: []StateEvent{{Type: "m.room.history_visibility", Content: []byte(`{"history_visibility":"` + tc.vis + `"}`)}}}, "")
				if err != nil {
					t.Fatal(err)
				}
				before, err := s.Send(ctx, roomID, alice, "m.room.message", nil, map[string]any{"body": "before"}, SendOpts{})
				if err != nil {
					t.Fatal(err)
				}
				if tc.vis != "world_readable" {
					if ok, _ := s.CanSeeEvent(ctx, bob, before); ok {
						t.Fatalf("non-member sees an event in a %s room", tc.vis)
					}
				}
				if _, err := s.Join(ctx, roomID, bob, CreatorProfile{}, nil); err != nil {
					t.Fatal(err)
				}
				after, _ := s.Send(ctx, roomID, alice, "m.room.message", nil, map[string]any{"body": "after"}, SendOpts{})
				if ok, _ := s.CanSeeEvent(ctx, bob, before); ok != tc.seesBefore {
					t.Fatalf("%s: bob sees pre-join event = %v, want %v", tc.vis, ok, tc.seesBefore)
				}
				if ok, _ := s.CanSeeEvent(ctx, bob, after); !ok {
					t.Fatalf("%s: bob cannot see an event sent while joined", tc.vis)
				}
				if _, err := s.ChangeMembership(ctx, roomID, bob, bob, "leave", "", nil); err != nil {
					t.Fatal(err)
				}
				later, _ := s.Send(ctx, roomID, alice, "m.room.message", nil, map[string]any{"body": "later"}, SendOpts{})
				if ok, _ := s.CanSeeEvent(ctx, bob, later); ok && tc.vis != "world_readable" {
					t.Fatalf("%s: bob sees an event sent after he left", tc.vis)
				}
			})
		}
	})
}
