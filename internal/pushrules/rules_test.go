package pushrules

import (
	"encoding/json"
	"testing"
)

func env(members int, name string, mayNotify bool) Env {
	return Env{UserID: "@bob:hs", DisplayName: func() string { return name }, MemberCount: func() int { return members },
		SenderMayNotify: func(string, string) bool { return mayNotify }}
}

func TestDefaultRules(t *testing.T) {
	rs := Defaults("@bob:hs")
	cases := []struct {
		name            string
		ev              string
		members         int
		notify, highlit bool
		rule            string
	}{
		{"own message", `{"type":"m.room.message","sender":"@bob:hs","content":{"body":"hi bob"}}`, 5, false, false, ""},
		{"group message", `{"type":"m.room.message","sender":"@a:hs","content":{"body":"hi"}}`, 5, true, false, ".m.rule.message"},
		{"one to one", `{"type":"m.room.message","sender":"@a:hs","content":{"body":"hi"}}`, 2, true, false, ".m.rule.room_one_to_one"},
		{"encrypted", `{"type":"m.room.encrypted","sender":"@a:hs","content":{}}`, 3, true, false, ".m.rule.encrypted"},
		{"notice", `{"type":"m.room.message","sender":"@a:hs","content":{"msgtype":"m.notice","body":"bob"}}`, 2, false, false, ".m.rule.suppress_notices"},
		{"edit", `{"type":"m.room.message","sender":"@a:hs","content":{"body":"* x","m.relates_to":{"rel_type":"m.replace","event_id":"$x"}}}`, 2, false, false, ".m.rule.suppress_edits"},
		{"user mention", `{"type":"m.room.message","sender":"@a:hs","content":{"body":"x","m.mentions":{"user_ids":["@bob:hs"]}}}`, 5, true, true, ".m.rule.is_user_mention"},
		{"m.mentions without me ignores body", `{"type":"m.room.message","sender":"@a:hs","content":{"body":"bob!","m.mentions":{}}}`, 5, true, false, ".m.rule.message"},
		{"legacy localpart mention", `{"type":"m.room.message","sender":"@a:hs","content":{"body":"hey Bob, look"}}`, 5, true, true, ".m.rule.contains_user_name"},
		{"localpart inside a word", `{"type":"m.room.message","sender":"@a:hs","content":{"body":"bobsleigh"}}`, 5, true, false, ".m.rule.message"},
		{"display name", `{"type":"m.room.message","sender":"@a:hs","content":{"body":"ask Robert Smith?"}}`, 5, true, true, ".m.rule.contains_display_name"},
		{"room mention", `{"type":"m.room.message","sender":"@a:hs","content":{"body":"x","m.mentions":{"room":true}}}`, 5, true, true, ".m.rule.is_room_mention"},
		{"invite for me", `{"type":"m.room.member","sender":"@a:hs","state_key":"@bob:hs","content":{"membership":"invite"}}`, 5, true, false, ".m.rule.invite_for_me"},
		{"other member event", `{"type":"m.room.member","sender":"@a:hs","state_key":"@a:hs","content":{"membership":"join"}}`, 5, false, false, ".m.rule.member_event"},
		{"reaction", `{"type":"m.reaction","sender":"@a:hs","content":{}}`, 2, false, false, ".m.rule.reaction"},
		{"tombstone", `{"type":"m.room.tombstone","sender":"@a:hs","state_key":"","content":{}}`, 5, true, true, ".m.rule.tombstone"},
		{"other state", `{"type":"m.room.topic","sender":"@a:hs","state_key":"","content":{"topic":"bob"}}`, 5, false, false, ""},
	}
	for _, c := range cases {
		res := rs.Evaluate([]byte(c.ev), env(c.members, "Robert Smith", true))
		got := ""
		if res.Rule != nil {
			got = res.Rule.RuleID
		}
		if res.Notify != c.notify || res.Highlight != c.highlit || got != c.rule {
			t.Errorf("%s: got notify=%v highlight=%v rule=%q, want %v %v %q", c.name, res.Notify, res.Highlight, got, c.notify, c.highlit, c.rule)
		}
	}
	// @room in the body needs the power to notify the room.
	ev := []byte(`{"type":"m.room.message","sender":"@a:hs","content":{"body":"@room lunch"}}`)
	if res := rs.Evaluate(ev, env(5, "", false)); res.Highlight {
		t.Error("@room from a sender without power highlighted")
	}
	if res := rs.Evaluate(ev, env(5, "", true)); !res.Highlight || res.Rule.RuleID != ".m.rule.roomnotif" {
		t.Errorf("@room from a moderator: %+v", res)
	}
}

func TestConditions(t *testing.T) {
	ev := []byte(`{"type":"m.room.message","sender":"@a:hs","content":{"body":"An exciting triple-whammy","topic":"Lunch plans","m.federate":true,"n":5,"tags":["x",1,true],"a.b":{"c":"dot"}}}`)
	p := func(s string) *string { return &s }
	cases := []struct {
		c    Condition
		want bool
	}{
		{Condition{Kind: "event_match", Key: "content.topic", Pattern: p("lunc?*")}, true},
		{Condition{Kind: "event_match", Key: "content.topic", Pattern: p("lunc")}, false},
		{Condition{Kind: "event_match", Key: "content.body", Pattern: p("ex*ple")}, true},
		{Condition{Kind: "event_match", Key: "content.body", Pattern: p("triple")}, true},
		{Condition{Kind: "event_match", Key: "content.body", Pattern: p("whamm")}, false},
		{Condition{Kind: "event_match", Key: "content.missing", Pattern: p("*")}, false},
		{Condition{Kind: "event_match", Key: "content.n", Pattern: p("*")}, false},
		{Condition{Kind: "event_match", Key: `content.a\.b.c`, Pattern: p("DOT")}, true},
		{Condition{Kind: "event_property_is", Key: `content.m\.federate`, Value: json.RawMessage(`true`)}, true},
		{Condition{Kind: "event_property_is", Key: `content.m\.federate`, Value: json.RawMessage(`"true"`)}, false},
		{Condition{Kind: "event_property_is", Key: "content.n", Value: json.RawMessage(`5`)}, true},
		{Condition{Kind: "event_property_contains", Key: "content.tags", Value: json.RawMessage(`1`)}, true},
		{Condition{Kind: "event_property_contains", Key: "content.tags", Value: json.RawMessage(`"y"`)}, false},
		{Condition{Kind: "room_member_count", Is: ">=3"}, true},
		{Condition{Kind: "room_member_count", Is: "<3"}, false},
		{Condition{Kind: "room_member_count", Is: "4"}, true},
		{Condition{Kind: "room_member_count", Is: "x"}, false},
		{Condition{Kind: "org.example.unknown"}, false},
	}
	for i, c := range cases {
		if got := matchCondition(&c.c, NewEvent(ev), env(4, "", false)); got != c.want {
			t.Errorf("case %d %+v: got %v", i, c.c, got)
		}
	}
}

func TestLoadKeepsUserRulesAndDefaultChanges(t *testing.T) {
	rs := Defaults("@bob:hs")
	rs.Find("override", ".m.rule.master").Enabled = true
	rs.Find("underride", ".m.rule.message").Actions = []json.RawMessage{}
	p := "lunch"
	rs.Content = append([]*Rule{{RuleID: "lunch", Enabled: true, Pattern: &p, Actions: []json.RawMessage{json.RawMessage(`"notify"`)}}}, rs.Content...)
	rs.Override = append(rs.Override[:1], append([]*Rule{{RuleID: "mine", Enabled: true, Actions: []json.RawMessage{}}}, rs.Override[1:]...)...)
	doc, _ := json.Marshal(rs.Document())
	got := Load(doc, "@bob:hs")
	if !got.Find("override", ".m.rule.master").Enabled || len(got.Find("underride", ".m.rule.message").Actions) != 0 {
		t.Fatal("changes to default rules were lost")
	}
	if got.Override[0].RuleID != ".m.rule.master" || got.Override[1].RuleID != "mine" || got.Content[0].RuleID != "lunch" {
		t.Fatalf("order: %s %s %s", got.Override[0].RuleID, got.Override[1].RuleID, got.Content[0].RuleID)
	}
	if len(got.Underride) != len(Defaults("@bob:hs").Underride) {
		t.Fatal("defaults missing after load")
	}
	// A master rule that is enabled silences everything.
	if res := got.Evaluate([]byte(`{"type":"m.room.message","sender":"@a:hs","content":{"body":"lunch"}}`), env(2, "", false)); res.Notify {
		t.Fatal("notified with the master rule on")
	}
	// Empty conditions survive as [] for override rules.
	b, _ := json.Marshal(got.Document())
	if !json.Valid(b) || !contains(string(b), `"rule_id":".m.rule.master","default":true,"enabled":true,"actions":[],"conditions":[]`) {
		t.Fatalf("document: %s", b)
	}
}

func contains(s, sub string) bool { return len(s) >= len(sub) && (s == sub || indexOf(s, sub) >= 0) }

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

func TestTweaks(t *testing.T) {
	r := &Rule{Actions: []json.RawMessage{json.RawMessage(`"notify"`), json.RawMessage(`"coalesce"`), json.RawMessage(`{"set_tweak":"sound","value":"ping"}`), json.RawMessage(`{"set_tweak":"highlight","value":false}`)}}
	res := interpret(r)
	if !res.Notify || res.Highlight || res.Tweaks()["sound"] != "ping" || res.Tweaks()["highlight"] != false || len(res.Actions) != 3 {
		t.Fatalf("%+v %v", res, res.Tweaks())
	}
	if !ValidAction(json.RawMessage(`"dont_notify"`)) || ValidAction(json.RawMessage(`"org.matrix.msc2625.mark_unread"`)) || ValidAction(json.RawMessage(`{"x":1}`)) {
		t.Fatal("ValidAction")
	}
}
