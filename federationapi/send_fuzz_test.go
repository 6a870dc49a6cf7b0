package federationapi

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"repeater/internal/config"
	"repeater/internal/httputil"
	"repeater/roomserver"
	"repeater/storage"
)

// fuzzAPI is a federation API over a fresh SQLite database with one room.
func fuzzAPI(t testing.TB) (*API, string) {
	ctx := context.Background()
	db, err := storage.Open(ctx, filepath.Join(t.TempDir(), "fuzz.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	cfg := config.Defaults()
	cfg.ServerName = "test.local"
	_, key, _ := ed25519.GenerateKey(nil)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := New(Deps{Config: cfg, KeyID: "ed25519:t", PrivateKey: key, DB: db, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	rs := roomserver.New(roomserver.Config{ServerName: "test.local", KeyID: "ed25519:t", PrivateKey: key, DefaultVersion: "10"}, db, nil, log)
	a.Attach(rs, nil)
	roomID, err := rs.CreateRoom(ctx, "@alice:test.local", roomserver.CreatorProfile{}, &roomserver.CreateRoomRequest{Preset: "public_chat"}, "")
	if err != nil {
		t.Fatal(err)
	}
	return a, roomID
}

// FuzzInboundTransaction feeds arbitrary transaction bodies to the /send
// handler (past request authentication): it must answer with a Matrix
// error or a per-PDU result, never panic, and leave the room usable.
func FuzzInboundTransaction(f *testing.F) {
	a, roomID := fuzzAPI(f)
	_, evilKey, _ := ed25519.GenerateKey(nil)
	impl := gomatrixserverlib.MustGetRoomVersion("10")
	empty := ""
	pe := gomatrixserverlib.ProtoEvent{SenderID: "@m:evil.test", RoomID: roomID, Type: "m.room.name", StateKey: &empty,
		PrevEvents: []string{"$x"}, AuthEvents: []string{"$y"}, Depth: 5, Content: []byte(`{"name":"x"}`)}
	ev, _ := impl.NewEventBuilderFromProtoEvent(&pe).Build(time.Now(), "evil.test", "ed25519:e", evilKey)
	seeds := []string{
		`{"origin":"evil.test","pdus":[]}`,
		`{"origin":"evil.test","pdus":[` + string(ev.JSON()) + `]}`,
		`{"pdus":[{"room_id":"` + roomID + `","type":"m.room.message"}],"edus":[{"edu_type":"m.typing","content":{"room_id":"` + roomID + `","user_id":"@m:evil.test","typing":true}}]}`,
		`{"pdus":[{"room_id":"` + roomID + `","prev_events":null,"auth_events":[1,2],"depth":-1}]}`,
		`{"edus":[{"edu_type":"m.receipt","content":{"` + roomID + `":{"m.read":{"@m:evil.test":{"event_ids":[7]}}}}},{"edu_type":"m.presence","content":{"push":[{}]}}]}`,
		`{"pdus":"nope"}`, `[]`, `null`, `{`, ``, `{"pdus":[` + strings.Repeat(`{},`, 50) + `{}]}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	n := 0
	f.Fuzz(func(t *testing.T, body []byte) {
		n++
		r := httptest.NewRequest("PUT", "/_matrix/federation/v1/send/t", nil)
		r = mux.SetURLVars(r, map[string]string{"txnId": "fuzz" + string(rune('a'+n%26)) + time.Now().Format("150405.000000")})
		res, err := a.send(r, spec.ServerName("evil.test"), body)
		if err != nil {
			if e := httputil.AsError(err); e == nil || e.Status >= 500 {
				t.Fatalf("body %q: %v", body, err)
			}
			return
		}
		if raw, ok := res.(json.RawMessage); !ok || !json.Valid(raw) {
			t.Fatalf("body %q: answer %v", body, res)
		}
	})
	// The room still takes events.
	if _, err := a.rs.Send(context.Background(), roomID, "@alice:test.local", "m.room.message", nil, map[string]any{"body": "ok"}, roomserver.SendOpts{}); err != nil {
		f.Fatal(err)
	}
}
