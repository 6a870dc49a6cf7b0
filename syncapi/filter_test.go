package syncapi

import "testing"

func TestTypeMatches(t *testing.T) {
	cases := []struct {
		pattern, typ string
		want         bool
	}{
		{"m.room.message", "m.room.message", true},
		{"m.room.message", "m.room.member", false},
		{"m.room.*", "m.room.member", true},
		{"m.*", "org.example", false},
		{"*", "anything", true},
		{"m.*.member", "m.room.member", true},
		{"m.*.member", "m.room.members", false},
	}
	for _, c := range cases {
		if got := typeMatches(c.pattern, c.typ); got != c.want {
			t.Errorf("typeMatches(%q, %q) = %v", c.pattern, c.typ, got)
		}
	}
}

func TestEventFilterAllows(t *testing.T) {
	f := EventFilter{Types: []string{"m.room.*"}, NotTypes: []string{"m.room.member"}, NotSenders: []string{"@spam:x"}}
	if !f.Allows("m.room.message", "@a:x", "!r:x") {
		t.Error("message should pass")
	}
	if f.Allows("m.room.member", "@a:x", "!r:x") {
		t.Error("not_types should win over types")
	}
	if f.Allows("m.room.message", "@spam:x", "!r:x") {
		t.Error("not_senders should exclude")
	}
	if f.Allows("org.custom", "@a:x", "!r:x") {
		t.Error("types should restrict")
	}
	empty := EventFilter{}
	if !empty.Allows("anything", "@a:x", "!r:x") {
		t.Error("an empty filter allows everything")
	}
	zero := EventFilter{Types: []string{}}
	if zero.Allows("m.room.message", "@a:x", "!r:x") {
		t.Error("an empty types list allows nothing")
	}
}

func TestTokens(t *testing.T) {
	for _, s := range []string{"s0_0", "s12_1795626573437", "s5"} {
		tok, err := parseToken(s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if s != "s5" && tok.String() != s {
			t.Errorf("round trip %s -> %s", s, tok)
		}
	}
	for _, s := range []string{"", "x1_2", "s-1_0", "sabc", "s1_x"} {
		if _, err := parseToken(s); err == nil {
			t.Errorf("%q parsed", s)
		}
	}
}
