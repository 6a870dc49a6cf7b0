package pushrules

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

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

// Event is an event being evaluated. It keeps what was read of it, so that
// evaluating one event for every member of a room reads each property of
// its JSON once. Not safe for concurrent use.
type Event struct {
	raw       []byte
	props     map[string]gjson.Result
	lower     string
	haveLower bool
}

// NewEvent wraps an event's JSON (client or federation format: both carry
// type, sender, room_id, content and state_key).
func NewEvent(raw []byte) *Event { return &Event{raw: raw, props: make(map[string]gjson.Result, 8)} }

// get reads a dot-separated property path (see property).
func (e *Event) get(key string) gjson.Result {
	if v, ok := e.props[key]; ok {
		return v
	}
	v := gjson.GetBytes(e.raw, gjsonPath(key))
	e.props[key] = v
	return v
}

// lowerBody is content.body in lower case ("" when not a string).
func (e *Event) lowerBody() string {
	if !e.haveLower {
		if b := e.get("content.body"); b.Type == gjson.String {
			e.lower = strings.ToLower(b.Str)
		}
		e.haveLower = true
	}
	return e.lower
}

// Evaluate finds the first enabled rule matching the event and interprets
// its actions. Events the user sent never notify.
func (rs *Ruleset) Evaluate(ev []byte, env Env) Result { return rs.EvaluateEvent(NewEvent(ev), env) }

// EvaluateEvent is Evaluate for an event evaluated for several users.
func (rs *Ruleset) EvaluateEvent(ev *Event, env Env) Result {
	sender := ev.get("sender").Str
	if sender == env.UserID {
		return Result{}
	}
	hasMentions := ev.get(`content.m\.mentions`).Exists()
	roomID := ev.get("room_id").Str
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
				ok = r.Pattern != nil && bodyMatch(*r.Pattern, ev)
			case "room":
				ok = r.RuleID == roomID
			case "sender":
				ok = r.RuleID == sender
			}
			if ok {
				if res := r.result.Load(); res != nil {
					return *res
				}
				res := interpret(r)
				r.result.Store(&res)
				return res
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

func matchCondition(c *Condition, ev *Event, env Env) bool {
	switch c.Kind {
	case "event_match":
		if c.Pattern == nil {
			return false
		}
		if c.Key == "content.body" {
			return bodyMatch(*c.Pattern, ev)
		}
		return globMatch(*c.Pattern, ev.get(c.Key))
	case "event_property_is":
		v := ev.get(c.Key)
		return v.Exists() && scalar(v) && jsonEqual(v, c.Value)
	case "event_property_contains":
		v := ev.get(c.Key)
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
		return name != "" && containsWord(ev.lowerBody(), strings.ToLower(name))
	case "room_member_count":
		if env.MemberCount == nil {
			return false
		}
		return countMatches(c.Is, env.MemberCount())
	case "sender_notification_permission":
		return env.SenderMayNotify != nil && c.Key != "" && env.SenderMayNotify(ev.get("sender").Str, c.Key)
	}
	return false // unrecognised conditions never match
}

// gjsonPath turns a dot-separated property path (Appendices, "Dot-separated
// property paths": "\." is a literal dot and "\\" a literal backslash)
// into a gjson path. Paths come from a few rules: they are kept.
func gjsonPath(key string) string {
	if p, ok := paths.Load(key); ok {
		return p.(string)
	}
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
	p := strings.Join(parts, ".")
	if pathCount.Add(1) < 10000 {
		paths.Store(key, p)
	}
	return p
}

var (
	paths     sync.Map // push-rule key -> gjson path
	pathCount atomic.Int64
)

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

// globMatch matches a glob pattern (Appendices, "Glob-style matching": *
// and ?) case-insensitively against the whole of a string value.
func globMatch(pattern string, v gjson.Result) bool {
	if v.Type != gjson.String {
		return false
	}
	if !strings.ContainsAny(pattern, "*?") {
		return strings.EqualFold(v.Str, pattern)
	}
	re := globs.get(pattern, false)
	return re != nil && re.MatchString(v.Str)
}

// bodyMatch matches a glob pattern against content.body: any part of it
// that starts and ends at a word boundary.
func bodyMatch(pattern string, ev *Event) bool {
	if ev.get("content.body").Type != gjson.String {
		return false
	}
	if !strings.ContainsAny(pattern, "*?") {
		return containsWord(ev.lowerBody(), strings.ToLower(pattern))
	}
	re := globs.get(pattern, true)
	return re != nil && re.MatchString(ev.get("content.body").Str)
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
