package pushrules

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/tidwall/gjson"
)

// Env is what evaluation needs beyond the event: facts about the room and
// the user whose rules these are. The functions are called only when a
// condition needs them.
type Env struct {
	UserID string
	// DisplayName is the user's display name in the room, for
	// contains_display_name.
	DisplayName func() string
	// MemberCount is the number of joined members of the room.
	MemberCount func() int
	// SenderMayNotify reports whether the sender's power level reaches the
	// level the room requires for a notification key ("room").
	SenderMayNotify func(sender, key string) bool
}

// Result is the outcome of evaluating an event for one user.
type Result struct {
	Rule      *Rule // the matching rule, nil when none matched
	Notify    bool
	Highlight bool
	Actions   []json.RawMessage // the rule's actions, historical ones removed
}

// Tweaks returns the set_tweak actions as a map, as push gateways get them.
func (r Result) Tweaks() map[string]any {
	out := map[string]any{}
	for _, a := range r.Actions {
		var t map[string]any
		if json.Unmarshal(a, &t) != nil {
			continue
		}
		name, _ := t["set_tweak"].(string)
		if name == "" {
			continue
		}
		if v, ok := t["value"]; ok {
			out[name] = v
		} else if name == "highlight" {
			out[name] = true
		}
	}
	return out
}

// Evaluate finds the first enabled rule matching the event (client or
// federation format JSON; both carry type, sender, content, state_key) and
// interprets its actions. Events the user sent never notify.
func (rs *Ruleset) Evaluate(ev []byte, env Env) Result {
	if gjson.GetBytes(ev, "sender").Str == env.UserID {
		return Result{}
	}
	hasMentions := gjson.GetBytes(ev, `content.m\.mentions`).Exists()
	roomID := gjson.GetBytes(ev, "room_id").Str
	sender := gjson.GetBytes(ev, "sender").Str
	for _, kind := range Kinds {
		for _, r := range *rs.Kind(kind) {
			if !r.Enabled || (hasMentions && r.Default && legacyMention[r.RuleID]) {
				continue
			}
			var ok bool
			switch kind {
			case "override", "underride":
				ok = true
				for i := range r.Conditions {
					if !matchCondition(&r.Conditions[i], ev, env) {
						ok = false
						break
					}
				}
			case "content":
				ok = r.Pattern != nil && globMatch(*r.Pattern, gjson.GetBytes(ev, "content.body"), true)
			case "room":
				ok = r.RuleID == roomID
			case "sender":
				ok = r.RuleID == sender
			}
			if ok {
				return interpret(r)
			}
		}
	}
	return Result{}
}

func interpret(r *Rule) Result {
	res := Result{Rule: r}
	for _, a := range r.Actions {
		var s string
		if json.Unmarshal(a, &s) == nil {
			if s == "notify" {
				res.Notify = true
				res.Actions = append(res.Actions, a)
			}
			continue // dont_notify and coalesce: historical, ignored
		}
		var t struct {
			SetTweak string          `json:"set_tweak"`
			Value    json.RawMessage `json:"value"`
		}
		if json.Unmarshal(a, &t) != nil || t.SetTweak == "" {
			continue
		}
		res.Actions = append(res.Actions, a)
		if t.SetTweak == "highlight" {
			res.Highlight = len(t.Value) == 0 || bytes.Equal(t.Value, []byte("true"))
		}
	}
	if !res.Notify {
		res.Highlight = false
	}
	return res
}

func matchCondition(c *Condition, ev []byte, env Env) bool {
	switch c.Kind {
	case "event_match":
		if c.Pattern == nil {
			return false
		}
		v := property(ev, c.Key)
		return globMatch(*c.Pattern, v, c.Key == "content.body")
	case "event_property_is":
		v := property(ev, c.Key)
		return v.Exists() && scalar(v) && jsonEqual(v, c.Value)
	case "event_property_contains":
		v := property(ev, c.Key)
		if !v.IsArray() {
			return false
		}
		found := false
		v.ForEach(func(_, el gjson.Result) bool {
			found = scalar(el) && jsonEqual(el, c.Value)
			return !found
		})
		return found
	case "contains_display_name":
		if env.DisplayName == nil {
			return false
		}
		name := env.DisplayName()
		body := gjson.GetBytes(ev, "content.body")
		return name != "" && body.Type == gjson.String && containsWord(strings.ToLower(body.Str), strings.ToLower(name))
	case "room_member_count":
		if env.MemberCount == nil {
			return false
		}
		return countMatches(c.Is, env.MemberCount())
	case "sender_notification_permission":
		return env.SenderMayNotify != nil && c.Key != "" && env.SenderMayNotify(gjson.GetBytes(ev, "sender").Str, c.Key)
	}
	return false // unrecognised conditions never match
}

// property reads a dot-separated property path (Appendices, "Dot-separated
// property paths": "\." is a literal dot and "\\" a literal backslash).
func property(ev []byte, key string) gjson.Result {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(key); i++ {
		switch {
		case key[i] == '\\' && i+1 < len(key) && (key[i+1] == '.' || key[i+1] == '\\'):
			cur.WriteByte(key[i+1])
			i++
		case key[i] == '.':
			parts = append(parts, gjson.Escape(cur.String()))
			cur.Reset()
		default:
			cur.WriteByte(key[i])
		}
	}
	parts = append(parts, gjson.Escape(cur.String()))
	return gjson.GetBytes(ev, strings.Join(parts, "."))
}

func scalar(v gjson.Result) bool {
	switch v.Type {
	case gjson.String, gjson.True, gjson.False, gjson.Null:
		return true
	case gjson.Number:
		_, err := strconv.ParseInt(v.Raw, 10, 64)
		return err == nil
	}
	return false
}

func jsonEqual(v gjson.Result, want json.RawMessage) bool {
	w := gjson.ParseBytes(want)
	if v.Type != w.Type {
		return false
	}
	switch v.Type {
	case gjson.String:
		return v.Str == w.Str
	case gjson.Number:
		return v.Raw == strings.TrimSpace(w.Raw)
	}
	return true // true, false, null
}

func countMatches(is string, n int) bool {
	op := "=="
	for _, p := range []string{"==", "<=", ">=", "<", ">"} {
		if strings.HasPrefix(is, p) {
			op, is = p, is[len(p):]
			break
		}
	}
	want, err := strconv.Atoi(strings.TrimSpace(is))
	if err != nil {
		return false
	}
	switch op {
	case "<":
		return n < want
	case ">":
		return n > want
	case "<=":
		return n <= want
	case ">=":
		return n >= want
	}
	return n == want
}

// globMatch matches a glob pattern (Appendices, "Glob-style matching": * and
// ?) case-insensitively against a string value: the whole value, or for
// content.body any part of it that starts and ends at a word boundary.
func globMatch(pattern string, v gjson.Result, words bool) bool {
	if v.Type != gjson.String {
		return false
	}
	if !strings.ContainsAny(pattern, "*?") {
		if words {
			return containsWord(strings.ToLower(v.Str), strings.ToLower(pattern))
		}
		return strings.EqualFold(v.Str, pattern)
	}
	re := globs.get(pattern, words)
	return re != nil && re.MatchString(v.Str)
}

// globCache keeps compiled patterns; rules change rarely and are few, so
// the cache is simply emptied when it grows past its bound.
type globCache struct {
	mu sync.Mutex
	m  map[string]*regexp.Regexp
}

var globs = &globCache{m: map[string]*regexp.Regexp{}}

func (g *globCache) get(pattern string, words bool) *regexp.Regexp {
	key := pattern
	if words {
		key = "w\x00" + pattern
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if re, ok := g.m[key]; ok {
		return re
	}
	var b strings.Builder
	b.WriteString("(?is)")
	if words {
		b.WriteString(`(?:^|[^A-Za-z0-9_])`)
	} else {
		b.WriteString("^")
	}
	for _, r := range pattern {
		switch r {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	if words {
		b.WriteString(`(?:[^A-Za-z0-9_]|$)`)
	} else {
		b.WriteString("$")
	}
	re, err := regexp.Compile(b.String())
	if err != nil {
		re = nil
	}
	if len(g.m) > 1000 {
		g.m = map[string]*regexp.Regexp{}
	}
	g.m[key] = re
	return re
}

// containsWord reports whether word occurs in s starting and ending at word
// boundaries: the ends of s or a character outside [A-Za-z0-9_].
func containsWord(s, word string) bool {
	if word == "" {
		return false
	}
	for i := 0; ; {
		j := strings.Index(s[i:], word)
		if j < 0 {
			return false
		}
		start, end := i+j, i+j+len(word)
		if (start == 0 || !isWordByte(s[start-1])) && (end == len(s) || !isWordByte(s[end])) {
			return true
		}
		i = start + 1
	}
}

func isWordByte(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '_'
}
