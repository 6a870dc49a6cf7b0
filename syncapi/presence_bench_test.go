package syncapi

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"repeater/internal/auth"
	"repeater/roomserver"
	"repeater/storage"
)

// BenchmarkPresence200Users measures presence with 200 online users in 20
// rooms (each user in two rooms, about 20 members a room): one user's
// presence change plus the incremental /sync of someone who shares a room.
func BenchmarkPresence200Users(b *testing.B) {
	ctx := context.Background()
	db, err := storage.Open(ctx, filepath.Join(b.TempDir(), "p.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	_, key, _ := ed25519.GenerateKey(nil)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	n := NewNotifier(0)
	rs := roomserver.New(roomserver.Config{ServerName: "b.local", KeyID: "ed25519:b", PrivateKey: key, DefaultVersion: "10"}, db, n, log)
	s := New(db, rs, n, true, nil, nil, "test.local", log)
	user := func(i int) string { return fmt.Sprintf("@u%d:b.local", i) }
	var rooms []string
	for i := 0; i < 20; i++ {
		id, err := rs.CreateRoom(ctx, user(i), roomserver.CreatorProfile{}, &roomserver.CreateRoomRequest{Preset: "public_chat"}, "")
		if err != nil {
			b.Fatal(err)
		}
		rooms = append(rooms, id)
	}
	for i := 20; i < 200; i++ {
		for _, r := range []int{i % 20, (i / 20) % 20} {
			if _, err := rs.Join(ctx, rooms[r], user(i), roomserver.CreatorProfile{}, nil); err != nil {
				b.Fatal(err)
			}
		}
	}
	for i := 0; i < 200; i++ {
		s.eph.setPresence(user(i), "online", nil, true)
	}
	viewer := &auth.Device{UserID: user(25), Localpart: "u25", DeviceID: "D"}
	pos, _ := db.StreamPos(ctx)
	since := Token{Pos: pos, EPos: s.eph.pos.Load()}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		msg := fmt.Sprintf("status %d", i)
		if s.eph.setPresence(user(5), "online", &msg, true) {
			s.wakeSharing(ctx, user(5))
		}
		req := &syncRequest{dev: viewer, since: &since, filter: &Filter{}, to: Token{Pos: pos, EPos: s.eph.pos.Load()}}
		resp, err := s.build(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		if len(resp.Presence["events"].([]any)) == 0 {
			b.Fatal("no presence in sync")
		}
		since = req.to
	}
}
