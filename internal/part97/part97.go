// Package part97 is the policy of Repeater's amateur-radio mode (FCC Part
// 97, for meshes such as AREDN and Broadband-Hamnet), as one value passed
// down to the edges and the roomserver: what is refused because it would be
// encrypted (§97.113(a)(4): no messages "encoded for the purpose of
// obscuring their meaning"), which user names are callsigns (§97.119), and
// which mesh peers may send events and requests without signatures.
//
// A nil *Policy is the mode switched off: every method then allows
// everything, so callers hold one value and never test a flag.
package part97

import (
	"fmt"
	"net"
	"regexp"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"repeater/internal/httputil"
)

// Policy is the mode's configuration in force.
type Policy struct {
	// Callsign is the station's callsign, upper case.
	Callsign string
	// RequireCallsign restricts new user names to callsigns.
	RequireCallsign bool
	// unsigned: events built here carry no signatures and outbound
	// requests no X-Matrix header.
	unsigned bool

	names map[string]bool
	nets  []*net.IPNet
}

// Options are the settings a Policy is made from (config.Part97).
type Options struct {
	Callsign        string
	RequireCallsign bool
	UnsignedEvents  bool
	TrustedPeers    []string
}

// New makes the policy; it fails on a trusted peer that is neither a
// server name nor a CIDR range.
func New(o Options) (*Policy, error) {
	p := &Policy{Callsign: strings.ToUpper(o.Callsign), RequireCallsign: o.RequireCallsign, unsigned: o.UnsignedEvents,
		names: map[string]bool{}}
	for _, t := range o.TrustedPeers {
		n, name, err := ParseTrusted(t)
		if err != nil {
			return nil, err
		}
		if n != nil {
			p.nets = append(p.nets, n)
		} else {
			p.names[name] = true
		}
	}
	return p, nil
}

// ParseTrusted reads one trusted_peers entry: a CIDR range or a server name.
func ParseTrusted(s string) (*net.IPNet, string, error) {
	if strings.Contains(s, "/") {
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			return nil, "", fmt.Errorf("trusted peer %q is not a CIDR range", s)
		}
		return n, "", nil
	}
	if _, _, ok := spec.ParseAndValidateServerName(spec.ServerName(s)); !ok {
		return nil, "", fmt.Errorf("trusted peer %q is neither a server name nor a CIDR range", s)
	}
	return nil, strings.ToLower(s), nil
}

// On reports whether the mode is on.
func (p *Policy) On() bool { return p != nil }

// callsignRE is an amateur callsign as the ITU allocates them (Radio
// Regulations Article 19): a prefix of one to three characters (letters,
// or a digit and letters, or a letter and a digit), one digit, and a suffix
// of up to four characters ending in a letter; optionally an SSID-style
// "-N" after it, as APRS and packet stations use.
var callsignRE = regexp.MustCompile(`^(?:[A-Z]{1,2}|[0-9][A-Z]{1,2}|[A-Z][0-9][A-Z]?)[0-9][A-Z0-9]{0,3}[A-Z](?:-[0-9A-Z]{1,2})?$`)

// ValidCallsign reports whether s (any case) is an amateur callsign.
func ValidCallsign(s string) bool {
	return len(s) <= 12 && callsignRE.MatchString(strings.ToUpper(s))
}

// CheckUsername refuses a new user name that is not a callsign when the
// mode requires one (M_INVALID_USERNAME, as for any invalid name).
func (p *Policy) CheckUsername(localpart string) error {
	if p == nil {
		return nil
	}
	if localpart == StationLocalpart {
		return httputil.Err(400, "M_USER_IN_USE", "This name is the station's own account")
	}
	if !p.RequireCallsign || ValidCallsign(localpart) {
		return nil
	}
	return httputil.Err(400, "M_INVALID_USERNAME",
		"This is an amateur-radio station (FCC Part 97, §97.119): the user name must be your callsign, e.g. K5DLQ or K5DLQ-2")
}

// refused is the error text for anything encrypted.
const refused = "Refused under FCC Part 97 (§97.113(a)(4)): this amateur-radio node carries no encrypted messages; end-to-end encryption is off"

// Refusal is the 403 for an encrypted request.
func Refusal(what string) error {
	return httputil.Forbidden(refused + " (" + what + ")")
}

// CheckEvent refuses a room event that would be, or would turn on,
// encryption: the m.room.encryption state, m.room.encrypted events and
// events carrying encrypted files (content.file or an encrypted
// thumbnail, spec: "Sending encrypted attachments").
func (p *Policy) CheckEvent(evType string, content []byte) error {
	if p == nil {
		return nil
	}
	switch evType {
	case spec.MRoomEncryption:
		return Refusal("m.room.encryption")
	case "m.room.encrypted":
		return Refusal("m.room.encrypted")
	}
	if gjson.GetBytes(content, "file").IsObject() || gjson.GetBytes(content, "info.thumbnail_file").IsObject() {
		return Refusal("encrypted attachment")
	}
	return nil
}

// CheckToDevice refuses encrypted to-device messages.
func (p *Policy) CheckToDevice(evType string) error {
	if p == nil || evType != "m.room.encrypted" {
		return nil
	}
	return Refusal("encrypted to-device message")
}

// CheckKeyBackup refuses server-side key backup (it only holds encrypted
// room keys).
func (p *Policy) CheckKeyBackup() error {
	if p == nil {
		return nil
	}
	return Refusal("key backup")
}

// TrustedName reports whether a server name is a trusted peer by name.
func (p *Policy) TrustedName(name string) bool {
	return p != nil && p.names[strings.ToLower(name)]
}

// TrustedAddr reports whether an address ("host:port" or a bare IP) is in
// a trusted range.
func (p *Policy) TrustedAddr(addr string) bool {
	if p == nil {
		return false
	}
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return false
	}
	for _, n := range p.nets {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// StationLocalpart is the account that holds a node's mesh rooms. It has
// no password (it cannot log in) and no user may register it.
const StationLocalpart = "station"

// MeshRoomMap is the station's account data remembering which room each
// mesh room alias of another server named, so that the room stays known
// while that server is unreachable.
const MeshRoomMap = "io.repeater.part97.mesh_rooms"

// FeatureFlag is the unstable feature /versions advertises in the mode.
const FeatureFlag = "io.repeater.part97"

// Unsigned reports whether events and requests made here go unsigned.
func (p *Policy) Unsigned() bool { return p != nil && p.unsigned }

// Finish removes the signatures from an event built here when the
// unsigned option is on. The content hash stays, and with it the event ID
// (room versions 3 and later hash the event without its signatures).
func (p *Policy) Finish(pdu gomatrixserverlib.PDU) (gomatrixserverlib.PDU, error) {
	if !p.Unsigned() {
		return pdu, nil
	}
	impl, err := gomatrixserverlib.GetRoomVersion(pdu.Version())
	if err != nil {
		return nil, err
	}
	js, err := sjson.DeleteBytes(pdu.JSON(), "signatures")
	if err != nil {
		return nil, err
	}
	return impl.NewEventFromTrustedJSONWithEventID(pdu.EventID(), js, false)
}
