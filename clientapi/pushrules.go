package clientapi

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"

	"github.com/tidwall/gjson"

	"repeater/internal/auth"
	"repeater/internal/httputil"
	"repeater/internal/pushrules"
	"repeater/storage"
)

// Push rules (Client-Server API, "Push Rules: API"). A user's rules are
// kept as their m.push_rules account data, so every change reaches their
// other devices through /sync.

// pushRulePath is a parsed path below /pushrules/.
type pushRulePath struct {
	scope, kind, ruleID, attr string
	depth                     int // 0: /pushrules/, 1: /global/, 2: /global/kind/, 3: a rule, 4: an attribute
}

// parsePushRulePath reads the rest of the path after /pushrules/, raw (as
// the router keeps paths encoded). A path that stops short of a rule
// without its trailing slash, an unknown scope, kind or attribute are all
// 400 M_INVALID_PARAM (sytest 61push/80torture).
func parsePushRulePath(rest string) (pushRulePath, error) {
	var p pushRulePath
	if rest == "" {
		return p, nil
	}
	segs := strings.Split(rest, "/")
	for i, s := range segs {
		u, err := url.PathUnescape(s)
		if err != nil {
			return p, httputil.InvalidParam("Bad path")
		}
		segs[i] = u
	}
	bad := httputil.InvalidParam("Unrecognised push rules path")
	p.scope = segs[0]
	if p.scope != "global" {
		return p, httputil.InvalidParam("Unknown scope")
	}
	switch {
	case len(segs) == 1:
		return p, bad // "global" without the trailing slash
	case len(segs) == 2 && segs[1] == "":
		p.depth = 1
		return p, nil
	}
	p.kind = segs[1]
	if (&pushrules.Ruleset{}).Kind(p.kind) == nil {
		return p, httputil.InvalidParam("Unknown kind")
	}
	switch {
	case len(segs) == 2:
		return p, bad
	case len(segs) == 3 && segs[2] == "":
		p.depth = 2
		return p, nil
	}
	p.ruleID = segs[2]
	if p.ruleID == "" {
		return p, httputil.InvalidParam("Empty rule ID")
	}
	p.depth = 3
	if len(segs) == 3 {
		return p, nil
	}
	if len(segs) > 4 || (segs[3] != "enabled" && segs[3] != "actions") {
		return p, httputil.InvalidParam("Unknown attribute")
	}
	p.attr, p.depth = segs[3], 4
	return p, nil
}

func (a *API) loadPushRules(r *http.Request, d *auth.Device) (*pushrules.Ruleset, error) {
	doc, err := a.db.PushRules(r.Context(), d.Localpart)
	if err != nil {
		return nil, err
	}
	return pushrules.Load(doc, d.UserID), nil
}

// getPushRules handles GET /pushrules/ and everything below it.
func (a *API) getPushRules(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	p, err := parsePushRulePath(vars(r)["rest"])
	if err != nil {
		return nil, err
	}
	rs, err := a.loadPushRules(r, d)
	if err != nil {
		return nil, err
	}
	doc := rs.Document()
	switch p.depth {
	case 0:
		return doc, nil
	case 1:
		return doc["global"], nil
	case 2:
		return doc["global"].(map[string]any)[p.kind], nil
	}
	rule := rs.Find(p.kind, p.ruleID)
	if rule == nil {
		return nil, httputil.NotFound("Unknown push rule")
	}
	switch p.attr {
	case "enabled":
		return map[string]any{"enabled": rule.Enabled}, nil
	case "actions":
		return map[string]any{"actions": rule.Actions}, nil
	}
	return pushrules.Marshal(p.kind, rule), nil
}

// changePushRules handles PUT and DELETE below /pushrules/.
func (a *API) changePushRules(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	p, err := parsePushRulePath(vars(r)["rest"])
	if err != nil {
		return nil, err
	}
	if p.depth < 3 {
		return nil, httputil.InvalidParam("A push rule path is needed")
	}
	var body []byte
	if r.Method == http.MethodPut {
		if body, err = httputil.ReadBody(r, 65536, false); err != nil {
			return nil, err
		}
		if !gjson.ValidBytes(body) || !gjson.ParseBytes(body).IsObject() {
			return nil, httputil.NotJSON("Body is not a JSON object")
		}
	} else if p.attr != "" {
		return nil, httputil.InvalidParam("Attributes cannot be deleted")
	}
	a.pushMu.Lock()
	defer a.pushMu.Unlock()
	rs, err := a.loadPushRules(r, d)
	if err != nil {
		return nil, err
	}
	rules := rs.Kind(p.kind)
	idx := -1
	for i, rule := range *rules {
		if rule.RuleID == p.ruleID {
			idx = i
		}
	}
	switch {
	case r.Method == http.MethodDelete:
		if idx < 0 {
			return nil, httputil.NotFound("Unknown push rule")
		}
		if (*rules)[idx].Default {
			return nil, httputil.Forbidden("Server-default rules cannot be deleted")
		}
		*rules = append((*rules)[:idx], (*rules)[idx+1:]...)
	case p.attr == "enabled":
		v := gjson.GetBytes(body, "enabled")
		if !v.IsBool() {
			return nil, httputil.BadJSON("enabled must be a boolean")
		}
		if idx < 0 {
			return nil, httputil.NotFound("Unknown push rule")
		}
		(*rules)[idx].Enabled = v.Bool()
	case p.attr == "actions":
		actions, err := readActions(body)
		if err != nil {
			return nil, err
		}
		if idx < 0 {
			return nil, httputil.NotFound("Unknown push rule")
		}
		(*rules)[idx].Actions = actions
	default:
		if err := putPushRule(r, rs, p, body, idx); err != nil {
			return nil, err
		}
	}
	doc, err := json.Marshal(rs.Document())
	if err != nil {
		return nil, err
	}
	if err := a.putAccountDataNotify(r, d, "", storage.PushRulesType, doc); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func readActions(body []byte) ([]json.RawMessage, error) {
	v := gjson.GetBytes(body, "actions")
	if !v.IsArray() {
		return nil, httputil.BadJSON("actions must be an array")
	}
	actions := []json.RawMessage{}
	for _, act := range v.Array() {
		if !pushrules.ValidAction(json.RawMessage(act.Raw)) {
			return nil, httputil.InvalidParam("Unrecognised action " + act.Raw)
		}
		actions = append(actions, json.RawMessage(act.Raw))
	}
	return actions, nil
}

// putPushRule adds a user rule or replaces it in place; a new rule goes
// first among the user's rules of its kind unless before/after place it
// next to another user rule.
func putPushRule(r *http.Request, rs *pushrules.Ruleset, p pushRulePath, body []byte, idx int) error {
	if strings.HasPrefix(p.ruleID, ".") {
		if idx >= 0 {
			return httputil.InvalidParam("Server-default rules can only have their actions or enabled flag changed")
		}
		return httputil.InvalidParam("Rule IDs starting with '.' are reserved for the server")
	}
	if strings.ContainsAny(p.ruleID, "/\\") {
		return httputil.InvalidParam("Rule IDs may not contain slashes")
	}
	actions, err := readActions(body)
	if err != nil {
		return err
	}
	rule := &pushrules.Rule{RuleID: p.ruleID, Enabled: true, Actions: actions}
	switch p.kind {
	case "override", "underride":
		conds := gjson.GetBytes(body, "conditions")
		if !conds.IsArray() {
			return httputil.BadJSON("conditions must be an array")
		}
		for _, c := range conds.Array() {
			var cond pushrules.Condition
			if !c.IsObject() || json.Unmarshal([]byte(c.Raw), &cond) != nil || cond.Kind == "" {
				return httputil.BadJSON("Each condition needs a kind")
			}
			rule.Conditions = append(rule.Conditions, cond)
		}
		if rule.Conditions == nil {
			rule.Conditions = []pushrules.Condition{}
		}
	case "content":
		pat := gjson.GetBytes(body, "pattern")
		if pat.Type != gjson.String {
			return httputil.BadJSON("A content rule needs a pattern")
		}
		rule.Pattern = &pat.Str
	}
	rules := rs.Kind(p.kind)
	if idx >= 0 {
		rule.Enabled = (*rules)[idx].Enabled
		(*rules)[idx] = rule
		return nil
	}
	// First among the user's rules: after .m.rule.master, before the rest.
	pos := len(*rules)
	for i, x := range *rules {
		if x.RuleID != ".m.rule.master" {
			pos = i
			break
		}
	}
	for _, q := range []string{"before", "after"} {
		ref := r.URL.Query().Get(q)
		if ref == "" {
			continue
		}
		j := -1
		for i, x := range *rules {
			if x.RuleID == ref {
				j = i
			}
		}
		if j < 0 {
			return httputil.NotFound("No rule " + ref + " to place this one " + q)
		}
		if (*rules)[j].Default {
			return httputil.InvalidParam("Rules cannot be placed relative to server-default rules")
		}
		pos = j
		if q == "after" {
			pos = j + 1
		}
	}
	*rules = append((*rules)[:pos], append([]*pushrules.Rule{rule}, (*rules)[pos:]...)...)
	return nil
}

// Pushers (Client-Server API, "Push Notifications: Client behaviour").

func (a *API) getPushers(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	ps, err := a.db.Pushers(r.Context(), d.Localpart)
	if err != nil {
		return nil, err
	}
	out := []any{}
	for _, p := range ps {
		out = append(out, map[string]any{"pushkey": p.PushKey, "kind": p.Kind, "app_id": p.AppID, "app_display_name": p.AppDisplayName,
			"device_display_name": p.DeviceDisplayName, "profile_tag": p.ProfileTag, "lang": p.Lang, "data": json.RawMessage(p.Data)})
	}
	return map[string]any{"pushers": out}, nil
}

func (a *API) setPusher(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	body, err := httputil.ReadBody(r, 65536, false)
	if err != nil {
		return nil, err
	}
	if !gjson.ValidBytes(body) || !gjson.ParseBytes(body).IsObject() {
		return nil, httputil.NotJSON("Body is not a JSON object")
	}
	get := func(k string) gjson.Result { return gjson.GetBytes(body, k) }
	for _, k := range []string{"pushkey", "app_id"} {
		if get(k).Type != gjson.String || get(k).Str == "" {
			return nil, httputil.MissingParam(k + " is required")
		}
	}
	if len(get("pushkey").Str) > 512 || len(get("app_id").Str) > 64 {
		return nil, httputil.InvalidParam("pushkey or app_id too long")
	}
	kind := get("kind")
	if kind.Type == gjson.Null {
		// "kind": null deletes the pusher.
		return struct{}{}, a.db.DeletePusher(r.Context(), d.Localpart, get("app_id").Str, get("pushkey").Str)
	}
	if kind.Type != gjson.String {
		return nil, httputil.MissingParam("kind is required")
	}
	if kind.Str != "http" {
		// "email" needs a mail sender, which this server does not have.
		return nil, httputil.InvalidParam("Unsupported pusher kind " + kind.Str)
	}
	for _, k := range []string{"app_display_name", "device_display_name", "lang"} {
		if get(k).Type != gjson.String {
			return nil, httputil.MissingParam(k + " is required")
		}
	}
	data := get("data")
	if !data.IsObject() {
		return nil, httputil.MissingParam("data is required")
	}
	if kind.Str == "http" {
		u, err := url.Parse(data.Get("url").Str)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, httputil.InvalidParam("data.url must be an http(s) URL")
		}
		// Push gateways serve this path (Push Gateway API); others are
		// refused so that the server cannot be made to POST anywhere.
		if u.Path != "/_matrix/push/v1/notify" {
			return nil, httputil.InvalidParam("data.url must end in /_matrix/push/v1/notify")
		}
	}
	p := storage.Pusher{Localpart: d.Localpart, AppID: get("app_id").Str, PushKey: get("pushkey").Str, Kind: kind.Str,
		AppDisplayName: get("app_display_name").Str, DeviceDisplayName: get("device_display_name").Str,
		ProfileTag: get("profile_tag").Str, Lang: get("lang").Str, DeviceID: d.DeviceID, Data: []byte(data.Raw)}
	if err := a.db.SetPusher(r.Context(), p, get("append").Bool()); err != nil {
		return nil, err
	}
	if a.pushers != nil {
		a.pushers.PushersChanged()
	}
	return struct{}{}, nil
}

// carryFromPredecessor runs after a user joined roomID: when the room
// replaced an older one (its create event names a predecessor), the user's
// settings for the old room carry over ("Room Upgrades": a muted room stays
// muted, tags and DM status follow). Best effort; the join has happened.
func (a *API) carryFromPredecessor(r *http.Request, d *auth.Device, roomID string) {
	create, err := a.rs.CurrentStateEvent(r.Context(), roomID, "m.room.create", "")
	if err != nil || create == nil {
		return
	}
	old := gjson.GetBytes(create.JSON, "content.predecessor.room_id").Str
	if old == "" || old == roomID {
		return
	}
	a.copyPushRules(r, d, old, roomID)
	a.carryAccountData(r, d, old, roomID)
}

// copyPushRules gives a user rules for roomID like the ones they have for
// old: room rules with the old room's ID, and override/underride rules
// whose room condition names it.
func (a *API) copyPushRules(r *http.Request, d *auth.Device, old, roomID string) {
	a.pushMu.Lock()
	defer a.pushMu.Unlock()
	rs, err := a.loadPushRules(r, d)
	if err != nil {
		return
	}
	changed := false
	for _, kind := range pushrules.Kinds {
		rules := rs.Kind(kind)
		var add []*pushrules.Rule
		for _, rule := range *rules {
			if rule.Default {
				continue
			}
			var cp *pushrules.Rule
			switch {
			case kind == "room" && rule.RuleID == old:
				cp = rule.Clone()
				cp.RuleID = roomID
			case kind == "override" || kind == "underride":
				for i, cond := range rule.Conditions {
					if cond.Kind == "event_match" && cond.Key == "room_id" && cond.Pattern != nil && *cond.Pattern == old {
						cp = rule.Clone()
						cp.RuleID = rule.RuleID + "-" + roomID
						p := roomID
						cp.Conditions[i].Pattern = &p
						break
					}
				}
			}
			if cp != nil && rs.Find(kind, cp.RuleID) == nil {
				add = append(add, cp)
			}
		}
		if len(add) > 0 {
			*rules = append(add, *rules...)
			changed = true
		}
	}
	if !changed {
		return
	}
	doc, err := json.Marshal(rs.Document())
	if err == nil {
		err = a.putAccountDataNotify(r, d, "", storage.PushRulesType, doc)
	}
	if err != nil {
		a.log.Warn("copying push rules to an upgraded room", "room", roomID, "err", err)
	}
}
