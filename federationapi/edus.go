package federationapi

import (
	"context"
	"encoding/json"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"repeater/roomserver"
)

// The syncapi.FederationEDUs side: our users' typing notifications, read
// receipts and presence, queued for the other servers concerned (spec:
// Server-Server API, "Typing Notifications", "Receipts", "Presence").

func (a *API) queueEDU(ctx context.Context, eduType string, content any, destinations []string) {
	var dests []string
	for _, d := range destinations {
		if d != string(a.serverName) {
			dests = append(dests, d)
		}
	}
	if len(dests) == 0 {
		return
	}
	edu, err := json.Marshal(map[string]any{"edu_type": eduType, "content": content})
	if err != nil {
		return
	}
	if err := a.db.EnqueueEDU(context.WithoutCancel(ctx), dests, edu); err != nil {
		a.log.Warn("queueing EDU", "type", eduType, "err", err)
		return
	}
	a.Sender.Queued(dests)
}

// Typing implements syncapi.FederationEDUs.
func (a *API) Typing(ctx context.Context, roomID, userID string, typing bool, _ time.Duration) {
	servers, err := a.rs.JoinedServers(ctx, roomID)
	if err != nil {
		return
	}
	a.queueEDU(ctx, "m.typing", map[string]any{"room_id": roomID, "user_id": userID, "typing": typing}, servers)
}

// Receipt implements syncapi.FederationEDUs.
func (a *API) Receipt(ctx context.Context, roomID, receiptType, userID, eventID string, ts int64) {
	servers, err := a.rs.JoinedServers(ctx, roomID)
	if err != nil {
		return
	}
	a.queueEDU(ctx, "m.receipt", map[string]any{roomID: map[string]any{receiptType: map[string]any{
		userID: map[string]any{"event_ids": []string{eventID}, "data": map[string]any{"ts": ts}}}}}, servers)
}

// Presence implements syncapi.FederationEDUs: sent to every server sharing
// a room with the user.
func (a *API) Presence(ctx context.Context, userID string, content map[string]any) {
	servers := a.serversSharing(ctx, userID)
	p := map[string]any{"user_id": userID}
	for k, v := range content {
		p[k] = v
	}
	if _, ok := p["presence"]; !ok {
		p["presence"] = "offline"
	}
	a.queueEDU(ctx, "m.presence", map[string]any{"push": []any{p}}, servers)
}

// presenceFor tells servers new to a room the presence of our users in it
// (spec: presence goes to every server sharing a room; a server that just
// joined would otherwise see our users offline until they next change).
func (a *API) presenceFor(ctx context.Context, roomID string, servers []string) {
	if a.edus == nil || len(servers) == 0 {
		return
	}
	members, err := a.rs.MembersWith(ctx, roomID, spec.Join)
	if err != nil {
		return
	}
	var push []any
	for _, u := range members {
		if roomserver.ServerOf(u) != string(a.serverName) {
			continue
		}
		p := map[string]any{"user_id": u}
		for k, v := range a.edus.PresenceOf(u) {
			p[k] = v
		}
		push = append(push, p)
	}
	if len(push) > 0 {
		a.queueEDU(ctx, "m.presence", map[string]any{"push": push}, servers)
	}
}

// serversSharing lists the servers with a user in a room that userID is in.
func (a *API) serversSharing(ctx context.Context, userID string) []string {
	users, err := a.rs.SharingUsers(ctx, userID)
	if err != nil {
		return nil
	}
	seen := map[string]bool{}
	var servers []string
	for _, u := range users {
		if s := roomserver.ServerOf(u); !seen[s] {
			seen[s] = true
			servers = append(servers, s)
		}
	}
	return servers
}
