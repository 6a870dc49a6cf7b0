package config

import (
	"strings"
	"testing"
)

// One switch: generate-config --part97 --callsign gives a node that
// validates with no editing, in the mode, with nothing encrypted.
func TestGeneratePart97(t *testing.T) {
	dir := t.TempDir()
	path, err := Generate(GenerateOptions{Dir: dir, Listen: ":8008", Part97: true, Callsign: "k5dlq"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("generated mesh config does not validate: %v", err)
	}
	p := c.Part97
	if !p.Enabled || p.Callsign != "K5DLQ" || !p.RequireCallsign || p.UnsignedEvents || p.ArednNode != "http://localnode.local.mesh" || p.ServiceName != "Matrix" {
		t.Fatalf("part97 settings: %+v", p)
	}
	if c.TLSListen != "" || c.TLSCert != "" || !strings.HasSuffix(c.ServerName, ".local.mesh") || c.Federation.Backfill != "full" || !c.Registration.Open {
		t.Fatalf("mesh node settings: server %q tls %q/%q backfill %q", c.ServerName, c.TLSListen, c.TLSCert, c.Federation.Backfill)
	}
	// An explicit server name is kept.
	path, err = Generate(GenerateOptions{Dir: t.TempDir(), ServerName: "k5dlq-pi.local.mesh", Part97: true, Callsign: "K5DLQ"})
	if err != nil {
		t.Fatal(err)
	}
	if c, _ = Load(path); c.ServerName != "k5dlq-pi.local.mesh" {
		t.Fatalf("server name %q", c.ServerName)
	}
}

// What the mode forbids is reported, each problem naming its rule.
func TestValidatePart97(t *testing.T) {
	dir := t.TempDir()
	path, err := Generate(GenerateOptions{Dir: dir, ServerName: "a.local.mesh", Part97: true, Callsign: "K5DLQ"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	c.TLSListen, c.TLSCert, c.TLSKey = ":8448", "signing.key", "signing.key"
	c.Part97.Callsign = "alice"
	c.Part97.TrustedPeers = []string{"10.0.0.0/99"}
	c.Part97.ArednNode = "https://localnode.local.mesh"
	c.Part97.MeshRooms = []string{"net"}
	c.Federation.Peers = map[string]string{"b.local.mesh": "https://10.1.2.3:8448"}
	err = c.Validate()
	if err == nil {
		t.Fatal("forbidden mesh config validated")
	}
	for _, want := range []string{"tls_listen: Part 97", "§97.113", "part97.callsign", "part97.trusted_peers", "part97.aredn_node", "part97.mesh_rooms", "plain http://"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q not reported in:\n%v", want, err)
		}
	}
	c.Part97.Callsign = ""
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "§97.119") {
		t.Errorf("missing callsign: %v", err)
	}
	// Off, the same settings are nobody's business.
	c.Part97 = Defaults().Part97
	c.TLSListen = ""
	c.Federation.Peers = nil
	if err := c.Validate(); err != nil {
		t.Fatalf("mode off: %v", err)
	}
}
