package clientapi

import (
	"net/http"

	"repeater/internal/auth"
)

// pushRules handles GET /pushrules/: the spec's default rule set
// (Client-Server API, "Predefined Rules"), which clients read on startup.
// Changing rules and evaluating them for notification counts come with push
// support.
func (a *API) pushRules(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	return map[string]any{"global": defaultPushRules(d.UserID, d.Localpart)}, nil
}

func defaultPushRules(userID, localpart string) map[string]any {
	notify := func(extra ...any) []any { return append([]any{"notify"}, extra...) }
	sound := func(s string) map[string]any { return map[string]any{"set_tweak": "sound", "value": s} }
	highlight := map[string]any{"set_tweak": "highlight"}
	noHighlight := map[string]any{"set_tweak": "highlight", "value": false}
	ev := func(key, pattern string) map[string]any {
		return map[string]any{"kind": "event_match", "key": key, "pattern": pattern}
	}
	rule := func(id string, enabled bool, conds []any, actions []any) map[string]any {
		return map[string]any{"rule_id": id, "default": true, "enabled": enabled, "conditions": conds, "actions": actions}
	}
	override := []any{
		rule(".m.rule.master", false, []any{}, []any{}),
		rule(".m.rule.suppress_notices", true, []any{ev("content.msgtype", "m.notice")}, []any{}),
		rule(".m.rule.invite_for_me", true, []any{ev("type", "m.room.member"), ev("content.membership", "invite"), ev("state_key", userID)},
			notify(sound("default"), noHighlight)),
		rule(".m.rule.member_event", true, []any{ev("type", "m.room.member")}, []any{}),
		rule(".m.rule.is_user_mention", true, []any{map[string]any{"kind": "event_property_contains", "key": `content.m\.mentions.user_ids`, "value": userID}},
			notify(sound("default"), highlight)),
		rule(".m.rule.is_room_mention", true, []any{
			map[string]any{"kind": "event_property_is", "key": `content.m\.mentions.room`, "value": true},
			map[string]any{"kind": "sender_notification_permission", "key": "room"}}, notify(highlight)),
		rule(".m.rule.tombstone", true, []any{ev("type", "m.room.tombstone"), ev("state_key", "")}, notify(highlight)),
		rule(".m.rule.reaction", true, []any{ev("type", "m.reaction")}, []any{}),
		rule(".m.rule.room.server_acl", true, []any{ev("type", "m.room.server_acl"), ev("state_key", "")}, []any{}),
		rule(".m.rule.suppress_edits", true, []any{map[string]any{"kind": "event_property_is", "key": `content.m\.relates_to.rel_type`, "value": "m.replace"}}, []any{}),
	}
	content := []any{
		map[string]any{"rule_id": ".m.rule.contains_user_name", "default": true, "enabled": true, "pattern": localpart,
			"actions": notify(sound("default"), highlight)},
	}
	one2one := map[string]any{"kind": "room_member_count", "is": "2"}
	underride := []any{
		rule(".m.rule.call", true, []any{ev("type", "m.call.invite")}, notify(sound("ring"), noHighlight)),
		rule(".m.rule.encrypted_room_one_to_one", true, []any{one2one, ev("type", "m.room.encrypted")}, notify(sound("default"), noHighlight)),
		rule(".m.rule.room_one_to_one", true, []any{one2one, ev("type", "m.room.message")}, notify(sound("default"), noHighlight)),
		rule(".m.rule.message", true, []any{ev("type", "m.room.message")}, notify(noHighlight)),
		rule(".m.rule.encrypted", true, []any{ev("type", "m.room.encrypted")}, notify(noHighlight)),
	}
	return map[string]any{"override": override, "content": content, "room": []any{}, "sender": []any{}, "underride": underride}
}
