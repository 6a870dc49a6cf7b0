package config

import (
	"os"
	"strings"

	"repeater/internal/part97"
)

// validatePart97 checks the amateur-radio mode's settings and what the
// mode forbids elsewhere in the config.
func (c *Config) validatePart97(add func(string, ...any)) {
	p := c.Part97
	if p.Callsign == "" {
		add("part97.callsign is required: the station identifies by its callsign (FCC §97.119)")
	} else if !part97.ValidCallsign(p.Callsign) {
		add("part97.callsign %q is not an amateur callsign", p.Callsign)
	}
	if c.TLSListen != "" {
		add("tls_listen: Part 97 mode forbids encryption on amateur frequencies (FCC §97.113(a)(4)); remove tls_listen (the mesh speaks plain HTTP on listen)")
	}
	for name, base := range c.Federation.Peers {
		if !strings.HasPrefix(base, "http://") {
			add("federation.peers: %s: Part 97 mode reaches peers over plain http:// only (FCC §97.113(a)(4)), not %q", name, base)
		}
	}
	for _, t := range p.TrustedPeers {
		if _, _, err := part97.ParseTrusted(t); err != nil {
			add("part97.trusted_peers: %v", err)
		}
	}
	if p.ArednNode != "" && !strings.HasPrefix(p.ArednNode, "http://") {
		add("part97.aredn_node %q must be an http:// URL", p.ArednNode)
	}
	if p.ArednNode != "" && p.PollSeconds < 10 {
		add("part97.poll_seconds must be at least 10")
	}
	for _, r := range p.MeshRooms {
		if !(strings.HasPrefix(r, "#") && strings.Contains(r, ":")) && !strings.HasPrefix(r, "!") {
			add("part97.mesh_rooms: %q is not a room alias (#name:server) or ID", r)
		}
	}
}

// applyPart97 sets what a mesh node needs: the mode for the callsign, plain
// HTTP only, open registration for callsigns (the mesh is the station's
// own network, and a user's callsign is their identity), the mesh's
// address range (AREDN's 10.0.0.0/8) trusted, complete history fetched
// after joining, and peers learnt from the AREDN node. With pickName, the server name is the
// host's *.local.mesh name (see MeshHostName).
func applyPart97(c *Config, callsign string, pickName bool) {
	c.Part97.Enabled = true
	c.Part97.Callsign = strings.ToUpper(callsign)
	c.Part97.RequireCallsign = true
	c.Part97.TrustedPeers = []string{"10.0.0.0/8"}
	c.Registration.Open = true
	c.TLSListen, c.TLSCert, c.TLSKey = "", "", ""
	c.Federation.Backfill = "full"
	if pickName {
		c.ServerName = MeshHostName(callsign)
	}
}

// MeshHostName is the server name a mesh node takes by default: the host
// name when it is a *.local.mesh name; otherwise the host name (the part
// before the first dot) under local.mesh, the name an AREDN node gives the
// hosts it serves; otherwise the callsign's.
func MeshHostName(callsign string) string {
	h, err := os.Hostname()
	if err == nil {
		h = strings.ToLower(strings.TrimSuffix(h, "."))
		if strings.HasSuffix(h, ".local.mesh") {
			return h
		}
		if short, _, _ := strings.Cut(h, "."); short != "" && short != "localhost" {
			return short + ".local.mesh"
		}
	}
	return strings.ToLower(callsign) + ".local.mesh"
}
