package federationapi

import (
	"context"
	"crypto/ed25519"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/tidwall/sjson"

	"repeater/internal/config"
	"repeater/roomserver"
	"repeater/storage"
)

// trustedPeers is the kind of verifier the amateur-radio mode plugs in:
// requests and events from configured mesh peers need no signature.
type trustedPeers struct {
	next  gomatrixserverlib.JSONVerifier
	peers map[string]bool
}

func (v trustedPeers) VerifyJSONs(ctx context.Context, reqs []gomatrixserverlib.VerifyJSONRequest) ([]gomatrixserverlib.VerifyJSONResult, error) {
	out := make([]gomatrixserverlib.VerifyJSONResult, len(reqs))
	var rest []gomatrixserverlib.VerifyJSONRequest
	var idx []int
	for i, r := range reqs {
		if !v.peers[string(r.ServerName)] {
			rest = append(rest, r)
			idx = append(idx, i)
		}
	}
	res, err := v.next.VerifyJSONs(ctx, rest)
	if err != nil {
		return nil, err
	}
	for j, i := range idx {
		out[i] = res[j]
	}
	return out, nil
}

// The signature checker is a seam: a wrapping verifier decides, and the
// key ring still decides for everyone else.
func TestVerifierSeam(t *testing.T) {
	db, err := storage.Open(context.Background(), filepath.Join(t.TempDir(), "v.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cfg := config.Defaults()
	cfg.ServerName = "test.local"
	_, key, _ := ed25519.GenerateKey(nil)
	a, err := New(Deps{Config: cfg, KeyID: "ed25519:t", PrivateKey: key, DB: db, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Verifier: func(kr gomatrixserverlib.JSONVerifier) gomatrixserverlib.JSONVerifier {
			return trustedPeers{next: kr, peers: map[string]bool{"mesh.test": true}}
		}})
	if err != nil {
		t.Fatal(err)
	}
	impl := gomatrixserverlib.MustGetRoomVersion("10")
	unsigned := func(server string) gomatrixserverlib.PDU {
		_, k, _ := ed25519.GenerateKey(nil)
		pe := gomatrixserverlib.ProtoEvent{SenderID: "@op:" + server, RoomID: "!r:" + server, Type: "m.room.message",
			PrevEvents: []string{"$p"}, AuthEvents: []string{"$a"}, Depth: 2, Content: []byte(`{"body":"73"}`)}
		ev, err := impl.NewEventBuilderFromProtoEvent(&pe).Build(time.Now(), "x", "ed25519:x", k)
		if err != nil {
			t.Fatal(err)
		}
		js, _ := sjson.DeleteBytes(ev.JSON(), "signatures")
		p, err := impl.NewEventFromUntrustedJSON(js)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if err := gomatrixserverlib.VerifyEventSignatures(context.Background(), unsigned("mesh.test"), a.verifier, roomserver.UserIDForSender); err != nil {
		t.Fatalf("trusted peer's unsigned event refused: %v", err)
	}
	if err := gomatrixserverlib.VerifyEventSignatures(context.Background(), unsigned("internet.test"), a.verifier, roomserver.UserIDForSender); err == nil {
		t.Fatal("an unsigned event from anyone else was accepted")
	}
}
