package roomserver

import (
	"context"
	"path/filepath"
	"testing"
)

// benchRoom returns a roomserver on a fresh SQLite file with one public room.
func benchRoom(b *testing.B) (*Server, string) {
	s := newTestServer(&testing.T{}, filepath.Join(b.TempDir(), "bench.db"))
	roomID, err := s.CreateRoom(context.Background(), "@alice:test.local", CreatorProfile{}, &CreateRoomRequest{Preset: "public_chat"}, "")
	if err != nil {
		b.Fatal(err)
	}
	return s, roomID
}

var benchContent = map[string]any{"msgtype": "m.text", "body": "hello world"}

// BenchmarkSend measures building, authorising, signing and storing one
// message event in a room (SQLite), one at a time.
func BenchmarkSend(b *testing.B) {
	s, roomID := benchRoom(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Send(ctx, roomID, "@alice:test.local", "m.room.message", nil, benchContent, SendOpts{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSendParallel sends from many goroutines into one room, as ten
// concurrent clients would: writes are pipelined and committed in batches.
func BenchmarkSendParallel(b *testing.B) {
	s, roomID := benchRoom(b)
	ctx := context.Background()
	b.SetParallelism(5)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Send(ctx, roomID, "@alice:test.local", "m.room.message", nil, benchContent, SendOpts{}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
