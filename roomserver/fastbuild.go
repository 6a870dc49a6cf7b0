package roomserver

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
)

// The fast builder writes the common event, a non-state message-like event,
// straight into canonical JSON, computes its content hash, reference hash
// (event ID) and signature over those bytes, and parses the result once.
// gomatrixserverlib's EventBuilder.Build produces the same bytes through
// several marshal/unmarshal round trips; it stays in use for everything
// else (state events, redactions, special types, room versions 1-3).
// TestFastBuildMatchesLibrary asserts byte equality with Build across
// room versions.
//
// Spec references: "Calculating the content hash for an event", "Signing
// events", "Calculating the reference hash for an event", "Redactions"
// (Server-Server API and room versions).

// fastBuildable reports whether an event can take the fast path: content
// is then redacted to {} and the top-level keys this builder writes are all
// either kept or (origin, in v11+) dropped by the redaction algorithm.
func fastBuildable(impl gomatrixserverlib.IRoomVersion, evType string, stateKey *string, redacts string) bool {
	if stateKey != nil || redacts != "" {
		return false
	}
	switch evType {
	case spec.MRoomCreate, spec.MRoomMember, spec.MRoomJoinRules, spec.MRoomPowerLevels,
		spec.MRoomHistoryVisibility, spec.MRoomAliases, spec.MRoomRedaction:
		return false
	}
	if impl.EventFormat() != gomatrixserverlib.EventFormatV2 || impl.EventIDFormat() != gomatrixserverlib.EventIDFormatV3 || impl.StateDAGs() {
		return false
	}
	return canonicalSafe(evType)
}

// canonicalSafe reports whether s can be written between quotes unchanged in
// canonical JSON: printable ASCII other than '"' and '\'. Anything else
// takes the library path, which escapes it.
func canonicalSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// redactionKeepsOrigin caches, per room version, whether the redaction
// algorithm keeps the top-level "origin" key (it does before v11). It is
// found by asking the library, so the fast path follows its rules.
var redactionKeepsOrigin sync.Map // gomatrixserverlib.RoomVersion -> bool

func keepsOrigin(impl gomatrixserverlib.IRoomVersion) bool {
	if v, ok := redactionKeepsOrigin.Load(impl.Version()); ok {
		return v.(bool)
	}
	red, err := impl.RedactEventJSON([]byte(`{"type":"x","room_id":"!r:x","sender":"@u:x","origin":"x","content":{},"depth":1,"prev_events":[],"auth_events":[],"origin_server_ts":1,"hashes":{}}`))
	keep := err == nil && gjson.GetBytes(red, "origin").Exists()
	redactionKeepsOrigin.Store(impl.Version(), keep)
	return keep
}

// fastBuild builds and signs the event (with a nil key, leaves it
// unsigned); content must be canonical JSON
// (see gomatrixserverlib.EnforcedCanonicalJSON). It returns the event JSON
// and its ID, or ok=false if a field is not canonical-safe.
func fastBuild(impl gomatrixserverlib.IRoomVersion, pe *gomatrixserverlib.ProtoEvent, authIDs []string, content []byte,
	now time.Time, origin spec.ServerName, keyID gomatrixserverlib.KeyID, key ed25519.PrivateKey) (eventJSON []byte, eventID string, ok bool) {
	prev, _ := pe.PrevEvents.([]string)
	for _, s := range [...]string{pe.RoomID, pe.SenderID, string(origin), string(keyID)} {
		if !canonicalSafe(s) {
			return nil, "", false
		}
	}
	for _, ids := range [2][]string{prev, authIDs} {
		for _, id := range ids {
			if !canonicalSafe(id) {
				return nil, "", false
			}
		}
	}
	ts := spec.AsTimestamp(now)
	// write emits the event with keys in canonical (sorted) order:
	// auth_events, content, depth, hashes, origin, origin_server_ts,
	// prev_events, room_id, sender, signatures, type.
	write := func(buf []byte, content []byte, hash []byte, withOrigin bool, sig []byte) []byte {
		buf = append(buf, `{"auth_events":`...)
		buf = appendIDs(buf, authIDs)
		buf = append(buf, `,"content":`...)
		buf = append(buf, content...)
		buf = append(buf, `,"depth":`...)
		buf = strconv.AppendInt(buf, pe.Depth, 10)
		if hash != nil {
			buf = append(buf, `,"hashes":{"sha256":"`...)
			buf = base64.RawStdEncoding.AppendEncode(buf, hash)
			buf = append(buf, `"}`...)
		}
		if withOrigin {
			buf = append(buf, `,"origin":"`...)
			buf = append(buf, origin...)
			buf = append(buf, '"')
		}
		buf = append(buf, `,"origin_server_ts":`...)
		buf = strconv.AppendInt(buf, int64(ts), 10)
		buf = append(buf, `,"prev_events":`...)
		buf = appendIDs(buf, prev)
		buf = append(buf, `,"room_id":"`...)
		buf = append(buf, pe.RoomID...)
		buf = append(buf, `","sender":"`...)
		buf = append(buf, pe.SenderID...)
		buf = append(buf, '"')
		if sig != nil {
			buf = append(buf, `,"signatures":{"`...)
			buf = append(buf, origin...)
			buf = append(buf, `":{"`...)
			buf = append(buf, keyID...)
			buf = append(buf, `":"`...)
			buf = base64.RawStdEncoding.AppendEncode(buf, sig)
			buf = append(buf, `"}}`...)
		}
		buf = append(buf, `,"type":"`...)
		buf = append(buf, pe.Type...)
		return append(buf, `"}`...)
	}
	size := 512 + len(content) + 64*(len(prev)+len(authIDs))
	buf := make([]byte, 0, size)
	// Content hash: the event without hashes, signatures and unsigned.
	buf = write(buf, content, nil, true, nil)
	contentHash := sha256.Sum256(buf)
	// Redacted form (content {}): signed, and hashed for the event ID.
	buf = write(buf[:0], []byte("{}"), contentHash[:], keepsOrigin(impl), nil)
	ref := sha256.Sum256(buf)
	var sig []byte
	if key != nil { // nil: an unsigned event (part97's unsigned option)
		sig = ed25519.Sign(key, buf)
	}
	eventJSON = write(make([]byte, 0, size), content, contentHash[:], true, sig)
	return eventJSON, "$" + base64.RawURLEncoding.EncodeToString(ref[:]), true
}

func appendIDs(buf []byte, ids []string) []byte {
	buf = append(buf, '[')
	for i, id := range ids {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, '"')
		buf = append(buf, id...)
		buf = append(buf, '"')
	}
	return append(buf, ']')
}
