package appservice

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeReg(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const ircReg = `id: irc
url: "http://127.0.0.1:9999"
as_token: as-secret
hs_token: hs-secret
sender_localpart: ircbot
rate_limited: false
protocols: [irc]
namespaces:
  users:
    - exclusive: true
      regex: '@irc_.*:example\.org'
  aliases:
    - exclusive: true
      regex: '#irc_.*:example\.org'
  rooms: []
`

func TestLoadAndNamespaces(t *testing.T) {
	dir := t.TempDir()
	bot := writeReg(t, dir, "bot.yaml", `id: bot
url: null
as_token: bot-as
hs_token: bot-hs
sender_localpart: helper
namespaces:
  users:
    - exclusive: false
      regex: '@bot_.*'
`)
	set, err := Load([]string{writeReg(t, dir, "irc.yaml", ircReg), bot}, "example.org")
	if err != nil {
		t.Fatal(err)
	}
	irc := set.ByToken("as-secret")
	if irc == nil || irc.ID != "irc" || set.ByToken("hs-secret") != nil || set.ByToken("") != nil || set.ByToken("as-secre") != nil {
		t.Fatalf("ByToken: %+v", irc)
	}
	if !irc.ExemptFromRateLimits() || irc.Sender() != "@ircbot:example.org" {
		t.Errorf("sender %q, exempt %v", irc.Sender(), irc.ExemptFromRateLimits())
	}
	for _, c := range []struct {
		user      string
		owns, exc bool
	}{
		{"@irc_alice:example.org", true, true},
		{"@ircbot:example.org", true, true},
		{"@alice:example.org", false, false},
		{"@xirc_alice:example.org", false, false}, // anchored at the start
	} {
		if irc.OwnsUser(c.user) != c.owns || set.HoldsUser(c.user) != c.exc {
			t.Errorf("%s: owns %v held %v", c.user, irc.OwnsUser(c.user), set.HoldsUser(c.user))
		}
	}
	if b := set.ByToken("bot-as"); b == nil || b.URL != nil || !b.OwnsUser("@bot_x:example.org") || set.HoldsUser("@bot_x:example.org") {
		t.Error("non-exclusive namespace or url: null")
	}
	if set.ExclusiveAlias("#irc_libera_matrix:example.org") != irc || set.ExclusiveAlias("#other:example.org") != nil {
		t.Error("alias namespace")
	}
}

// A bad registration stops start-up with the file's name and the problem.
func TestLoadRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	good := writeReg(t, dir, "irc.yaml", ircReg)
	for name, c := range map[string]struct {
		body, want string
	}{
		"regex":     {strings.Replace(ircReg, `'@irc_.*:example\.org'`, `'@irc_(('`, 1), "not a regular expression"},
		"no tokens": {"id: x\nsender_localpart: x\n", "as_token and hs_token are required"},
		"localpart": {strings.Replace(ircReg, "ircbot", "IRC Bot", 1), "sender_localpart"},
		"yaml":      {"id: [", "yaml"},
		"url":       {strings.Replace(ircReg, `"http://127.0.0.1:9999"`, `"ftp://x"`, 1), "url"},
	} {
		p := writeReg(t, dir, name+".yaml", c.body)
		_, err := Load([]string{p}, "example.org")
		if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v", name, err)
		}
	}
	dupID := writeReg(t, dir, "dup-id.yaml", strings.NewReplacer("as-secret", "other-as", "hs-secret", "other-hs").Replace(ircReg))
	dupAS := writeReg(t, dir, "dup-as.yaml", strings.NewReplacer("id: irc", "id: irc2", "hs-secret", "other-hs").Replace(ircReg))
	for _, p := range []string{dupID, dupAS} {
		if _, err := Load([]string{good, p}, "example.org"); err == nil || !strings.Contains(err.Error(), "also used by") {
			t.Errorf("%s: %v", p, err)
		}
	}
	if _, err := Load([]string{filepath.Join(dir, "missing.yaml")}, "example.org"); err == nil {
		t.Error("missing file accepted")
	}
}
