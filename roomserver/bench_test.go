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

// BenchmarkSendParallel sends from many goroutines into one room, as ten
// concurrent clients would: writes are pipelined and committed in batches.
func BenchmarkSendParallel(b *testing.B) {
	s := newTestServer(&testing.T{}, filepath.Join(b.TempDir(), "bench.db"))
	ctx := context.Background()
	alice := "@alice:test.local"
	roomID, err := s.CreateRoom(ctx, alice, CreatorProfile{}, &CreateRoomRequest{Preset: "public_chat"}, "")
	if err != nil {
		b.Fatal(err)
	}
	content := map[string]any{"msgtype": "m.text", "body": "hello world"}
	b.SetParallelism(5)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Send(ctx, roomID, alice, "m.room.message", nil, content, SendOpts{}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
