package roomserver

import (
	"crypto/ed25519"
	"encoding/json"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// dag builds events of one room for state resolution tests.
type dag struct {
	t      *testing.T
	impl   gomatrixserverlib.IRoomVersion
	key    ed25519.PrivateKey
	roomID string
	ts     time.Time
	all    []gomatrixserverlib.PDU
}

func (d *dag) ev(sender, typ string, stateKey *string, content any, prev []gomatrixserverlib.PDU, auth ...gomatrixserverlib.PDU) gomatrixserverlib.PDU {
	d.t.Helper()
	raw, _ := json.Marshal(content)
	var prevIDs, authIDs []string
	depth := int64(1)
	for _, p := range prev {
		prevIDs = append(prevIDs, p.EventID())
		depth = max(depth, p.Depth()+1)
	}
	for _, a := range auth {
		if a.Type() == spec.MRoomCreate && d.impl.DomainlessRoomIDs() {
			continue // room version 12: implied by the room ID
		}
		authIDs = append(authIDs, a.EventID())
	}
	if prevIDs == nil {
		prevIDs = []string{}
	}
	if authIDs == nil {
		authIDs = []string{}
	}
	roomID := d.roomID
	if typ == spec.MRoomCreate && d.impl.DomainlessRoomIDs() {
		roomID = ""
	}
	pe := gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: roomID, Type: typ, StateKey: stateKey,
		PrevEvents: prevIDs, AuthEvents: authIDs, Depth: depth, Content: raw}
	d.ts = d.ts.Add(time.Second)
	p, err := d.impl.NewEventBuilderFromProtoEvent(&pe).Build(d.ts, "test.local", "ed25519:t", d.key)
	if err != nil {
		d.t.Fatal(err)
	}
	d.all = append(d.all, p)
	return p
}

func sk(s string) *string { return &s }

// A power conflict resolved by our v2 gives what gomatrixserverlib's v2
// gives, and what the spec's rules say: the demotion-free branch's name
// change by a user promoted on that branch, the other branch's topic and
// ban.
func TestStateResolutionV2(t *testing.T) {
	for _, ver := range []gomatrixserverlib.RoomVersion{"10", "12"} {
		t.Run("v"+string(ver), func(t *testing.T) {
			_, key, _ := ed25519.GenerateKey(nil)
			d := &dag{t: t, impl: gomatrixserverlib.MustGetRoomVersion(ver), key: key, roomID: "!room:test.local", ts: time.UnixMilli(1700000000000)}
			alice, bob, carol := "@alice:test.local", "@bob:test.local", "@carol:test.local"
			create := d.ev(alice, spec.MRoomCreate, sk(""), map[string]any{"creator": alice, "room_version": string(ver)}, nil)
			if d.impl.DomainlessRoomIDs() {
				d.roomID = "!" + create.EventID()[1:]
			}
			aj := d.ev(alice, spec.MRoomMember, sk(alice), map[string]any{"membership": "join"}, []gomatrixserverlib.PDU{create}, create)
			users := map[string]any{alice: 100}
			if d.impl.PrivilegedCreators() {
				users = map[string]any{} // room version 12: creators may not be listed
			}
			pl := d.ev(alice, spec.MRoomPowerLevels, sk(""), map[string]any{"users": users, "state_default": 50, "ban": 50}, []gomatrixserverlib.PDU{aj}, create, aj)
			jr := d.ev(alice, spec.MRoomJoinRules, sk(""), map[string]any{"join_rule": "public"}, []gomatrixserverlib.PDU{pl}, create, aj, pl)
			bj := d.ev(bob, spec.MRoomMember, sk(bob), map[string]any{"membership": "join"}, []gomatrixserverlib.PDU{jr}, create, pl, jr)
			cj := d.ev(carol, spec.MRoomMember, sk(carol), map[string]any{"membership": "join"}, []gomatrixserverlib.PDU{bj}, create, pl, jr)
			base := []gomatrixserverlib.PDU{create, aj, pl, jr, bj, cj}
			// Branch A: bob is promoted, then renames the room.
			usersA := map[string]any{bob: 50}
			for k, v := range users {
				usersA[k] = v
			}
			plA := d.ev(alice, spec.MRoomPowerLevels, sk(""), map[string]any{"users": usersA, "state_default": 50, "ban": 50}, []gomatrixserverlib.PDU{cj}, create, aj, pl)
			name := d.ev(bob, spec.MRoomName, sk(""), map[string]any{"name": "Bob's"}, []gomatrixserverlib.PDU{plA}, create, plA, bj)
			// Branch B: alice sets the topic and bans carol.
			topic := d.ev(alice, spec.MRoomTopic, sk(""), map[string]any{"topic": "T"}, []gomatrixserverlib.PDU{cj}, create, aj, pl)
			ban := d.ev(alice, spec.MRoomMember, sk(carol), map[string]any{"membership": "ban"}, []gomatrixserverlib.PDU{topic}, create, aj, pl, cj)
			setA := append(append([]gomatrixserverlib.PDU{}, base...), name)
			setA[2] = plA
			setB := append(append([]gomatrixserverlib.PDU{}, base...), topic)
			setB[5] = ban
			ours, err := resolveState(d.impl, [][]gomatrixserverlib.PDU{setA, setB}, d.all, func(string) bool { return false })
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, p := range ours {
				got[p.Type()+"|"+*p.StateKey()] = p.EventID()
			}
			want := map[string]string{
				"m.room.create|": create.EventID(), "m.room.power_levels|": plA.EventID(), "m.room.join_rules|": jr.EventID(),
				"m.room.member|" + alice: aj.EventID(), "m.room.member|" + bob: bj.EventID(), "m.room.member|" + carol: ban.EventID(),
				"m.room.name|": name.EventID(), "m.room.topic|": topic.EventID(),
			}
			for k, id := range want {
				if got[k] != id {
					t.Errorf("%s: got %s, want %s", k, got[k], id)
				}
			}
			if len(got) != len(want) {
				t.Errorf("resolved %d keys, want %d: %v", len(got), len(want), got)
			}
			if ver == "10" {
				// The library's v2 agrees (its v2.1 cannot be compared: see stateres.go).
				lib := gomatrixserverlib.ResolveStateConflictsV2New(gomatrixserverlib.StateResV2, [][]gomatrixserverlib.PDU{setA, setB}, d.all, UserIDForSender, func(string) bool { return false })
				for _, p := range lib {
					if got[p.Type()+"|"+*p.StateKey()] != p.EventID() {
						t.Errorf("library resolves %s|%s to %s, we to %s", p.Type(), *p.StateKey(), p.EventID(), got[p.Type()+"|"+*p.StateKey()])
					}
				}
			}
		})
	}
}

// The classic case the algorithm exists for: on one branch a moderator is
// demoted, on the other the moderator changes the name. Power events are
// resolved first, so the name change no longer passes.
func TestStateResolutionDemotionWins(t *testing.T) {
	for _, ver := range []gomatrixserverlib.RoomVersion{"10", "12"} {
		t.Run("v"+string(ver), func(t *testing.T) {
			_, key, _ := ed25519.GenerateKey(nil)
			d := &dag{t: t, impl: gomatrixserverlib.MustGetRoomVersion(ver), key: key, roomID: "!room:test.local", ts: time.UnixMilli(1700000000000)}
			alice, bob := "@alice:test.local", "@bob:test.local"
			create := d.ev(alice, spec.MRoomCreate, sk(""), map[string]any{"creator": alice, "room_version": string(ver)}, nil)
			if d.impl.DomainlessRoomIDs() {
				d.roomID = "!" + create.EventID()[1:]
			}
			aj := d.ev(alice, spec.MRoomMember, sk(alice), map[string]any{"membership": "join"}, []gomatrixserverlib.PDU{create}, create)
			with := func(bobLevel int) map[string]any {
				u := map[string]any{bob: bobLevel}
				if !d.impl.PrivilegedCreators() {
					u[alice] = 100
				}
				return map[string]any{"users": u, "state_default": 50}
			}
			pl := d.ev(alice, spec.MRoomPowerLevels, sk(""), with(50), []gomatrixserverlib.PDU{aj}, create, aj)
			jr := d.ev(alice, spec.MRoomJoinRules, sk(""), map[string]any{"join_rule": "public"}, []gomatrixserverlib.PDU{pl}, create, aj, pl)
			bj := d.ev(bob, spec.MRoomMember, sk(bob), map[string]any{"membership": "join"}, []gomatrixserverlib.PDU{jr}, create, pl, jr)
			base := []gomatrixserverlib.PDU{create, aj, pl, jr, bj}
			demote := d.ev(alice, spec.MRoomPowerLevels, sk(""), with(0), []gomatrixserverlib.PDU{bj}, create, aj, pl)
			name := d.ev(bob, spec.MRoomName, sk(""), map[string]any{"name": "mine now"}, []gomatrixserverlib.PDU{bj}, create, pl, bj)
			setA := append(append([]gomatrixserverlib.PDU{}, base...), name)
			setB := append([]gomatrixserverlib.PDU{}, base...)
			setB[2] = demote
			ours, err := resolveState(d.impl, [][]gomatrixserverlib.PDU{setA, setB}, d.all, func(string) bool { return false })
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range ours {
				if p.Type() == spec.MRoomName {
					t.Fatal("the demoted moderator's name change survived")
				}
				if p.Type() == spec.MRoomPowerLevels && p.EventID() != demote.EventID() {
					t.Fatal("the demotion lost")
				}
			}
			if ver == "10" {
				lib := gomatrixserverlib.ResolveStateConflictsV2New(gomatrixserverlib.StateResV2, [][]gomatrixserverlib.PDU{setA, setB}, d.all, UserIDForSender, func(string) bool { return false })
				if len(lib) != len(ours) {
					t.Fatalf("library resolves %d events, we %d", len(lib), len(ours))
				}
			}
		})
	}
}
