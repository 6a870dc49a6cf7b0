package roomserver

import (
	"context"
	"path/filepath"
	"testing"
)

// BenchmarkSend measures building, authorising, signing and storing one
// message event in a room (SQLite).
func BenchmarkSend(b *testing.B) {
	s := newTestServer(&testing.T{}, filepath.Join(b.TempDir(), "bench.db"))
	ctx := context.Background()
	alice := "@alice:test.local"
	roomID, err := s.CreateRoom(ctx, alice, CreatorProfile{}, &CreateRoomRequest{Preset: "public_chat"}, "")
	if err != nil {
		b.Fatal(err)
	}
	content := map[string]any{"msgtype": "m.text", "body": "hello world"}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Send(ctx, roomID, alice, "m.room.message", nil, content, SendOpts{}); err != nil {
			b.Fatal(err)
		}
	}
}
