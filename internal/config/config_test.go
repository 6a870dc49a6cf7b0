package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGenerateLoadValidate(t *testing.T) {
	dir := t.TempDir()
	path, err := Generate(GenerateOptions{Dir: dir, ServerName: "example.org", TestNetwork: true, SharedSecret: "s", TLSListen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("generated config does not validate: %v", err)
	}
	if !c.Registration.Open || c.RateLimits.Enabled || !c.Federation.SkipTLSVerify || c.TLSListen == "" {
		t.Fatalf("--test-network settings missing: %+v", c)
	}
	if _, err := LoadSigningKey(c.Path(c.SigningKeyPath)); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"tls.crt", "tls.key", "signing.key"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("%s not written: %v", f, err)
		}
	}
	// Regenerating keeps the existing key.
	before, _ := os.ReadFile(filepath.Join(dir, "signing.key"))
	if _, err := Generate(GenerateOptions{Dir: dir, ServerName: "example.org"}); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "signing.key"))
	if string(before) != string(after) {
		t.Fatal("generate-config replaced an existing signing key")
	}
}

func TestValidateListsEveryProblem(t *testing.T) {
	c := Defaults()
	c.Dir = t.TempDir()
	c.ServerName = "bad name!"
	c.SigningKeyPath = "missing.key"
	c.Listen = "nonsense"
	c.BcryptCost = 2
	c.DefaultRoomVersion = "99"
	c.LogLevel = "loud"
	c.TLSListen = ":8448"
	c.Federation.Backfill = "sometimes"
	c.Federation.Peers = map[string]string{"mesh.local": "10.0.0.1:8008"}
	c.Federation.Notaries = []Notary{{ServerName: "notary.test", Keys: map[string]string{"ed25519:a": "not-a-key"}}}
	c.Federation.OldVerifyKeys = []OldKey{{KeyID: "rsa:x"}}
	err := c.Validate()
	if err == nil {
		t.Fatal("invalid config validated")
	}
	for _, want := range []string{"server_name", "signing_key_path", "listen", "bcrypt_cost", "default_room_version", "log_level", "tls_cert",
		"federation.backfill", "federation.peers", "federation.notaries", "federation.old_verify_keys"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("problem with %s not reported in:\n%v", want, err)
		}
	}
}
