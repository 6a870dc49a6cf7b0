// Package pushrules holds push rules (Client-Server API, "Push Rules"): the
// server-default rule set, a user's rules merged over it, and evaluation of
// an event against them. It knows nothing of storage or HTTP; the client
// API edits rules, /sync counts with them and the pusher notifies with them.
package pushrules

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"
)

// Kinds in the order they are evaluated.
var Kinds = []string{"override", "content", "room", "sender", "underride"}

// Condition is one push condition. Value is kept raw: event_property_is and
// event_property_contains compare it exactly (strings, integers, booleans,
// null).
type Condition struct {
	Kind    string          `json:"kind"`
	Key     string          `json:"key,omitempty"`
	Pattern *string         `json:"pattern,omitempty"`
	Value   json.RawMessage `json:"value,omitempty"`
	Is      string          `json:"is,omitempty"`
}

// Rule is one push rule.
type Rule struct {
	RuleID     string            `json:"rule_id"`
	Default    bool              `json:"default"`
	Enabled    bool              `json:"enabled"`
	Conditions []Condition       `json:"conditions,omitempty"`
	Pattern    *string           `json:"pattern,omitempty"`
	Actions    []json.RawMessage `json:"actions"`

	// result caches the interpreted actions (rules in a Cache are never
	// changed; one changed in place is a fresh Load's, evaluated never).
	result atomic.Pointer[Result]
}

// kindRule marshals a rule as its kind has it: conditions for override and
// underride rules even when empty (".m.rule.master" has "conditions": []),
// and never for the others.
type kindRule struct {
	kind string
	*Rule
}

func (r kindRule) MarshalJSON() ([]byte, error) {
	out := struct {
		RuleID     string            `json:"rule_id"`
		Default    bool              `json:"default"`
		Enabled    bool              `json:"enabled"`
		Pattern    *string           `json:"pattern,omitempty"`
		Actions    []json.RawMessage `json:"actions"`
		Conditions *[]Condition      `json:"conditions,omitempty"`
	}{RuleID: r.RuleID, Default: r.Default, Enabled: r.Enabled, Pattern: r.Pattern, Actions: r.Actions}
	if r.kind == "override" || r.kind == "underride" {
		conds := r.Conditions
		if conds == nil {
			conds = []Condition{}
		}
		out.Conditions = &conds
	}
	return json.Marshal(out)
}

// Marshal returns a rule of a kind as JSON.
func Marshal(kind string, r *Rule) any { return kindRule{kind, r} }

// Ruleset is a user's "global" rules, kind by kind, in priority order.
type Ruleset struct {
	Override  []*Rule `json:"override"`
	Content   []*Rule `json:"content"`
	Room      []*Rule `json:"room"`
	Sender    []*Rule `json:"sender"`
	Underride []*Rule `json:"underride"`
}

// Kind returns the rules of one kind (nil for an unknown kind).
func (rs *Ruleset) Kind(kind string) *[]*Rule {
	switch kind {
	case "override":
		return &rs.Override
	case "content":
		return &rs.Content
	case "room":
		return &rs.Room
	case "sender":
		return &rs.Sender
	case "underride":
		return &rs.Underride
	}
	return nil
}

// Find returns the rule with the ID in a kind, or nil.
func (rs *Ruleset) Find(kind, id string) *Rule {
	k := rs.Kind(kind)
	if k == nil {
		return nil
	}
	for _, r := range *k {
		if r.RuleID == id {
			return r
		}
	}
	return nil
}

// Document is the m.push_rules account data content and the answer of
// GET /pushrules/.
func (rs *Ruleset) Document() map[string]any {
	g := map[string]any{}
	for _, kind := range Kinds {
		rules := []kindRule{}
		for _, r := range *rs.Kind(kind) {
			rules = append(rules, kindRule{kind, r})
		}
		g[kind] = rules
	}
	return map[string]any{"global": g}
}

// Load returns a user's rules: stored is the user's m.push_rules document as
// last saved (nil when never changed). Server-default rules always come from
// this version's defaults, with the user's enabled flag and actions kept, so
// defaults added or changed by an upgrade reach every user; user rules keep
// their stored order. Server-default rules rank below user rules of their
// kind, except ".m.rule.master", which ranks above everything.
func Load(stored []byte, userID string) *Ruleset {
	defs := Defaults(userID)
	var doc struct {
		Global map[string][]*Rule `json:"global"`
	}
	if len(stored) == 0 || json.Unmarshal(stored, &doc) != nil {
		return defs
	}
	out := &Ruleset{}
	for _, kind := range Kinds {
		var user []*Rule
		saved := map[string]*Rule{}
		for _, r := range doc.Global[kind] {
			if r == nil || r.RuleID == "" {
				continue
			}
			if strings.HasPrefix(r.RuleID, ".") {
				saved[r.RuleID] = r
				continue
			}
			r.Default = false
			user = append(user, r)
		}
		var def []*Rule
		for _, d := range *defs.Kind(kind) {
			if s := saved[d.RuleID]; s != nil {
				d.Enabled = s.Enabled
				if s.Actions != nil {
					d.Actions = s.Actions
				}
			}
			def = append(def, d)
		}
		rules := out.Kind(kind)
		if kind == "override" && len(def) > 0 && def[0].RuleID == ".m.rule.master" {
			*rules = append(append([]*Rule{def[0]}, user...), def[1:]...)
		} else {
			*rules = append(user, def...)
		}
	}
	return out
}

// ValidAction reports whether an action is one the server understands:
// notify, the historical dont_notify and coalesce (ignored), or a tweak.
func ValidAction(a json.RawMessage) bool {
	var s string
	if json.Unmarshal(a, &s) == nil {
		return s == "notify" || s == "dont_notify" || s == "coalesce"
	}
	var t struct {
		SetTweak *string `json:"set_tweak"`
	}
	return json.Unmarshal(a, &t) == nil && t.SetTweak != nil && *t.SetTweak != ""
}

// Defaults returns the server-default rules ("Predefined Rules") for a user.
//
// Besides the current spec's set this keeps the legacy body-mention rules
// (.m.rule.contains_display_name, .m.rule.contains_user_name,
// .m.rule.roomnotif) that spec v1.17 dropped: bridges and older clients
// still send mentions only in the body. As spec v1.7–v1.16 required, they
// apply only to events without an m.mentions property (see Evaluate).
func Defaults(userID string) *Ruleset {
	localpart := strings.TrimPrefix(userID, "@")
	if i := strings.IndexByte(localpart, ':'); i >= 0 {
		localpart = localpart[:i]
	}
	str := func(s string) *string { return &s }
	match := func(key, pattern string) Condition {
		return Condition{Kind: "event_match", Key: key, Pattern: str(pattern)}
	}
	raw := func(v any) json.RawMessage { b, _ := json.Marshal(v); return b }
	notify := raw("notify")
	sound := func(s string) json.RawMessage { return raw(map[string]any{"set_tweak": "sound", "value": s}) }
	highlight := raw(map[string]any{"set_tweak": "highlight"})
	rule := func(id string, enabled bool, conds []Condition, actions ...json.RawMessage) *Rule {
		if actions == nil {
			actions = []json.RawMessage{}
		}
		return &Rule{RuleID: id, Default: true, Enabled: enabled, Conditions: conds, Actions: actions}
	}
	oneToOne := Condition{Kind: "room_member_count", Is: "2"}
	return &Ruleset{
		Override: []*Rule{
			rule(".m.rule.master", false, nil),
			rule(".m.rule.suppress_notices", true, []Condition{match("content.msgtype", "m.notice")}),
			rule(".m.rule.invite_for_me", true, []Condition{match("type", "m.room.member"), match("content.membership", "invite"), match("state_key", userID)},
				notify, sound("default")),
			rule(".m.rule.member_event", true, []Condition{match("type", "m.room.member")}),
			rule(".m.rule.is_user_mention", true, []Condition{{Kind: "event_property_contains", Key: `content.m\.mentions.user_ids`, Value: raw(userID)}},
				notify, sound("default"), highlight),
			rule(".m.rule.contains_display_name", true, []Condition{{Kind: "contains_display_name"}}, notify, sound("default"), highlight),
			rule(".m.rule.is_room_mention", true, []Condition{{Kind: "event_property_is", Key: `content.m\.mentions.room`, Value: raw(true)},
				{Kind: "sender_notification_permission", Key: "room"}}, notify, highlight),
			rule(".m.rule.roomnotif", true, []Condition{match("content.body", "@room"), {Kind: "sender_notification_permission", Key: "room"}},
				notify, highlight),
			rule(".m.rule.tombstone", true, []Condition{match("type", "m.room.tombstone"), match("state_key", "")}, notify, highlight),
			rule(".m.rule.reaction", true, []Condition{match("type", "m.reaction")}),
			rule(".m.rule.room.server_acl", true, []Condition{match("type", "m.room.server_acl"), match("state_key", "")}),
			rule(".m.rule.suppress_edits", true, []Condition{{Kind: "event_property_is", Key: `content.m\.relates_to.rel_type`, Value: raw("m.replace")}}),
		},
		Content: []*Rule{
			{RuleID: ".m.rule.contains_user_name", Default: true, Enabled: true, Pattern: str(localpart),
				Actions: []json.RawMessage{notify, sound("default"), highlight}},
		},
		Underride: []*Rule{
			rule(".m.rule.call", true, []Condition{match("type", "m.call.invite")}, notify, sound("ring")),
			rule(".m.rule.encrypted_room_one_to_one", true, []Condition{oneToOne, match("type", "m.room.encrypted")}, notify, sound("default")),
			rule(".m.rule.room_one_to_one", true, []Condition{oneToOne, match("type", "m.room.message")}, notify, sound("default")),
			rule(".m.rule.message", true, []Condition{match("type", "m.room.message")}, notify),
			rule(".m.rule.encrypted", true, []Condition{match("type", "m.room.encrypted")}, notify),
		},
	}
}

// legacyMention lists the default rules that look for mentions in the body;
// they are skipped for events that carry m.mentions.
var legacyMention = map[string]bool{
	".m.rule.contains_display_name": true,
	".m.rule.contains_user_name":    true,
	".m.rule.roomnotif":             true,
}

// Cache keeps users' parsed rules, keyed by the stored document they came
// from, so the hot paths (/sync's counts, the push worker) parse a user's
// rules once per change. A Ruleset from the cache must not be modified.
type Cache struct {
	mu sync.Mutex
	m  map[string]cached
}

type cached struct {
	doc []byte
	rs  *Ruleset
}

// Get returns the rules for a user whose stored document is doc.
func (c *Cache) Get(userID string, doc []byte) *Ruleset {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[userID]; ok && bytes.Equal(e.doc, doc) {
		return e.rs
	}
	rs := Load(doc, userID)
	if c.m == nil || len(c.m) > 10000 {
		c.m = map[string]cached{}
	}
	c.m[userID] = cached{doc: doc, rs: rs}
	return rs
}

// Clone returns a copy of a rule with its own conditions.
func (r *Rule) Clone() *Rule {
	return &Rule{RuleID: r.RuleID, Default: r.Default, Enabled: r.Enabled, Pattern: r.Pattern, Actions: r.Actions,
		Conditions: append([]Condition(nil), r.Conditions...)}
}
