package main

// The "T" group: several servers in one room. R1, R2 and (when given) R3
// are Repeaters, D is Dendrite. See README.md ("Group T").

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/tidwall/gjson"
)

// groupT runs T1..T4 with r1 (alice on Repeater 1), r2 (carol on
// Repeater 2), d (bob on Dendrite) and, if r3 is not nil, r3 (dave on
// Repeater 3). Everyone takes turns in that order: alice, carol, bob, dave.
func groupT(e *env, r1, r2, r3, d *client, history int) {
	all := []*client{r1, r2, d}
	if r3 != nil {
		all = append(all, r3)
	}
	n := len(all)

	// ------------------------------------------------------------ T1
	var roomID string
	created := step("T1.create-room@r1", func() (string, error) {
		// state_default 0 lets every member send state events that have no
		// explicit level, m.room.topic included (T3 has bob set the topic).
		r, err := r1.do("POST", "/_matrix/client/v3/createRoom", map[string]any{
			"preset": "public_chat", "name": "Interop T " + e.run,
			"power_level_content_override": map[string]any{"state_default": 0},
		})
		if err != nil {
			return "", err
		}
		roomID = r.Get("room_id").String()
		return fmt.Sprintf("%s created %s (power_levels.state_default=0)", r1.label, roomID), nil
	})
	joinedR2 := created && step("T1.join-r2-via-r1", func() (string, error) {
		return joinVia(r2, roomID, r1.server)
	})
	joinedD := created && step("T1.join-den-via-r1", func() (string, error) {
		return joinVia(d, roomID, r1.server)
	})
	joinedR3 := true
	if r3 != nil {
		joinedR3 = created && step("T1.join-r3-via-r1", func() (string, error) {
			return joinVia(r3, roomID, r1.server)
		})
	}
	if !created || !joinedR2 || !joinedD || !joinedR3 {
		why := "room creation failed"
		if created {
			why = "a join failed"
		}
		for _, name := range []string{"T1.joined-members-everywhere", "T2.messages-linear", "T2.same-order-everywhere", "T3.topic-by-den"} {
			skip(name, why)
		}
	} else {
		step("T1.joined-members-everywhere", func() (string, error) {
			var want []string
			for _, c := range all {
				want = append(want, c.userID)
			}
			sort.Strings(want)
			var seen []string
			for _, c := range all {
				var got []string
				err := poll(func() (bool, string, error) {
					r, err := c.do("GET", "/_matrix/client/v3/rooms/"+pe(roomID)+"/joined_members", nil)
					if err != nil {
						return false, err.Error(), nil
					}
					got = got[:0]
					r.Get("joined").ForEach(func(k, _ gjson.Result) bool {
						got = append(got, k.String())
						return true
					})
					sort.Strings(got)
					return strings.Join(got, ",") == strings.Join(want, ","),
						fmt.Sprintf("%s's joined_members: %v, want %v", c.label, got, want), nil
				})
				if err != nil {
					return strings.Join(seen, "; "), err
				}
				seen = append(seen, fmt.Sprintf("%s: %d joined", c.label, len(got)))
			}
			return strings.Join(seen, "; "), nil
		})

		// -------------------------------------------------------- T2
		tag := "t2-" + e.run + "-"
		var sent []string            // event IDs in send order
		label := map[string]string{} // event ID -> "a00" style label
		sentOK := step("T2.messages-linear", func() (string, error) {
			k := 0
			for round := 0; round < 5; round++ {
				for _, c := range all {
					body := fmt.Sprintf("%s%03d", tag, k)
					id, err := c.send(roomID, body)
					if err != nil {
						return "", fmt.Errorf("message %d by %s: %w", k, c.label, err)
					}
					sent = append(sent, id)
					label[id] = fmt.Sprintf("%c%02d", c.label[0], k)
					for _, w := range all {
						if err := waitEvent(w, roomID, id); err != nil {
							return "", fmt.Errorf("message %d (%s) by %s not visible: %w", k, id, c.label, err)
						}
					}
					k++
				}
			}
			var turn []string
			for _, c := range all {
				turn = append(turn, c.label)
			}
			return fmt.Sprintf("%d messages, round-robin %s, each seen on all %d servers before the next", len(sent), strings.Join(turn, "→"), n), nil
		})
		if !sentOK {
			skip("T2.same-order-everywhere", "sending failed")
		} else {
			step("T2.same-order-everywhere", func() (string, error) {
				return sameOrder(all, roomID, tag, sent, label)
			})
		}

		// -------------------------------------------------------- T3
		step("T3.topic-by-den", func() (string, error) {
			topic := "Topic set by " + d.label + " " + e.run
			id, err := d.do("PUT", "/_matrix/client/v3/rooms/"+pe(roomID)+"/state/m.room.topic/",
				map[string]any{"topic": topic})
			if err != nil {
				return "", err
			}
			var seen []string
			for _, c := range all {
				err := poll(func() (bool, string, error) {
					r, err := c.do("GET", "/_matrix/client/v3/rooms/"+pe(roomID)+"/state/m.room.topic/", nil)
					if err != nil {
						return false, err.Error(), nil
					}
					got := r.Get("topic").String()
					return got == topic, fmt.Sprintf("%s sees topic %q", c.label, got), nil
				})
				if err != nil {
					return strings.Join(seen, ", "), err
				}
				seen = append(seen, c.label)
			}
			return fmt.Sprintf("%s (%s) seen by %s", topic, id.Get("event_id").String(), strings.Join(seen, ", ")), nil
		})
	}

	// ------------------------------------------------------------ T4
	var room4 string
	tag4 := "t4-" + e.run + "-"
	var sent4 []string
	label4 := map[string]string{}
	if !step("T4.den-sends-history", func() (string, error) {
		r, err := d.do("POST", "/_matrix/client/v3/createRoom", map[string]any{
			"preset": "public_chat", "name": "Interop T4 " + e.run,
		})
		if err != nil {
			return "", err
		}
		room4 = r.Get("room_id").String()
		for i := 0; i < history; i++ {
			id, err := d.send(room4, fmt.Sprintf("%s%03d", tag4, i))
			if err != nil {
				return "", fmt.Errorf("message %d: %w", i, err)
			}
			sent4 = append(sent4, id)
			label4[id] = fmt.Sprintf("b%02d", i)
		}
		return fmt.Sprintf("%s sent %d messages in %s", d.label, history, room4), nil
	}) {
		names := []string{"T4.join-r2-via-den", "T4.paginate-r2", "T4.join-r1-via-r2", "T4.paginate-r1"}
		if r3 != nil {
			names = append(names, "T4.join-r3-via-r2", "T4.paginate-r3")
		}
		for _, name := range append(names, "T4.same-order-everywhere") {
			skip(name, "setup failed")
		}
		return
	}
	if step("T4.join-r2-via-den", func() (string, error) { return joinVia(r2, room4, d.server) }) {
		step("T4.paginate-r2", func() (string, error) { return lateWalk(r2, room4, tag4, sent4) })
	} else {
		skip("T4.paginate-r2", "join failed")
	}
	// R1 joins through R2: a Repeater that is itself only a joined
	// resident of a Dendrite-hosted room serves make_join/send_join.
	if step("T4.join-r1-via-r2", func() (string, error) { return joinVia(r1, room4, r2.server) }) {
		step("T4.paginate-r1", func() (string, error) { return lateWalk(r1, room4, tag4, sent4) })
	} else {
		skip("T4.paginate-r1", "join failed")
	}
	if r3 != nil {
		// R3 joins through R2 as well, after R1: R2 serves a second
		// make_join/send_join, and R3 is the fourth server in the room.
		if step("T4.join-r3-via-r2", func() (string, error) { return joinVia(r3, room4, r2.server) }) {
			step("T4.paginate-r3", func() (string, error) { return lateWalk(r3, room4, tag4, sent4) })
		} else {
			skip("T4.paginate-r3", "join failed")
		}
	}
	step("T4.same-order-everywhere", func() (string, error) {
		return sameOrder(all, room4, tag4, sent4, label4)
	})
}

// joinVia joins roomID through one server and checks the returned room ID.
func joinVia(c *client, roomID, via string) (string, error) {
	got, err := c.join(roomID, via)
	if err != nil {
		return "", err
	}
	if got != roomID {
		return "", fmt.Errorf("join returned %q, want %q", got, roomID)
	}
	if err := c.waitMembership(roomID, c.userID, "join"); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s joined %s?server_name=%s", c.label, roomID, via), nil
}

// waitEvent polls c's latest 50 events of /messages until eventID is there.
func waitEvent(c *client, roomID, eventID string) error {
	return poll(func() (bool, string, error) {
		r, err := c.messages(roomID, "", 50)
		if err != nil {
			return false, err.Error(), nil
		}
		for _, ev := range r.Get("chunk").Array() {
			if ev.Get("event_id").String() == eventID {
				return true, "", nil
			}
		}
		return false, fmt.Sprintf("%s: %s not in latest %d events of /messages", c.label, eventID, len(r.Get("chunk").Array())), nil
	})
}

// walkComplete walks c's /messages back to the start, repeating the walk
// (backfill may be lazy) until every tagged message and m.room.create is
// there or the wait runs out. It returns the last walk and its verdict.
func walkComplete(c *client, roomID, tag string, n int) (p *pagination, desc string, clean, createRepeat bool, walks int, err error) {
	var last string
	err = poll(func() (bool, string, error) {
		walks++
		q, werr := paginateAll(c, roomID, tag)
		if werr != nil {
			last = werr.Error()
			return false, last, nil
		}
		var complete bool
		p = q
		desc, complete, clean, createRepeat = q.verdict(tag, n)
		last = desc
		return complete, desc, nil
	})
	if err != nil {
		err = fmt.Errorf("%w (after %d full walks)", err, walks)
	}
	return
}

// chronological returns the tagged message event IDs of a walk, oldest
// first (a backwards walk receives them newest first).
func (p *pagination) chronological() []string {
	var out []string
	for i := len(p.order) - 1; i >= 0; i-- {
		if _, ok := p.bodies[p.order[i]]; ok {
			out = append(out, p.order[i])
		}
	}
	return out
}

// lateWalk: a Repeater user who joined after the history was sent pages
// back to m.room.create and must see every message exactly once, with the
// event IDs the sender got, and no event twice.
func lateWalk(c *client, roomID, tag string, sent []string) (string, error) {
	p, desc, clean, _, walks, err := walkComplete(c, roomID, tag, len(sent))
	if err != nil {
		return "", err
	}
	if !clean {
		return "", errors.New("duplicates: " + desc)
	}
	if bad := idMismatch(p, tag, sent); bad != "" {
		return "", errors.New(bad + " | " + desc)
	}
	return fmt.Sprintf("%s (walk %d)", desc, walks), nil
}

// idMismatch reports messages whose event ID differs from the one the
// sender got back.
func idMismatch(p *pagination, tag string, sent []string) string {
	var bad []string
	for id, b := range p.bodies {
		var k int
		if _, err := fmt.Sscanf(strings.TrimPrefix(b, tag), "%03d", &k); err != nil || k < 0 || k >= len(sent) {
			bad = append(bad, fmt.Sprintf("unexpected body %q (%s)", b, id))
			continue
		}
		if sent[k] != id {
			bad = append(bad, fmt.Sprintf("%q has event ID %s, sent as %s", b, id, sent[k]))
		}
	}
	sort.Strings(bad)
	if len(bad) == 0 {
		return ""
	}
	return strings.Join(bad, "; ")
}

// sameOrder walks the room on every server and checks that each sees every
// tagged message exactly once and that the chronological order of their
// event IDs is the same everywhere and equal to the send order (the
// history is linear: each message was visible everywhere before the next
// was sent). Duplicated non-message events are reported; on Dendrite the
// known m.room.create repeat (bug 2) is only noted, since this step is
// about the messages.
func sameOrder(all []*client, roomID, tag string, sent []string, label map[string]string) (string, error) {
	render := func(ids []string) string {
		out := make([]string, len(ids))
		for i, id := range ids {
			if l, ok := label[id]; ok {
				out[i] = l
			} else {
				out[i] = id
			}
		}
		return strings.Join(out, " ")
	}
	want := render(sent)
	var problems, notes []string
	orders := map[string]string{}
	for _, c := range all {
		p, desc, clean, createRepeat, walks, err := walkComplete(c, roomID, tag, len(sent))
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", c.label, err))
			continue
		}
		for b, n := range p.counts {
			if n != 1 {
				problems = append(problems, fmt.Sprintf("%s: %q seen %d times", c.label, b, n))
			}
		}
		if bad := idMismatch(p, tag, sent); bad != "" {
			problems = append(problems, c.label+": "+bad)
		}
		if !clean {
			if createRepeat && c.impl == "dendrite" {
				notes = append(notes, fmt.Sprintf("%s: Dendrite bug 2 m.room.create repeat (ignored here): %s", c.label, desc))
			} else {
				problems = append(problems, fmt.Sprintf("%s: duplicate events: %s", c.label, desc))
			}
		}
		got := render(p.chronological())
		orders[c.label] = got
		if got != want {
			problems = append(problems, fmt.Sprintf("%s: ORDER MISMATCH (walk %d)\n      got:  %s\n      sent: %s", c.label, walks, got, want))
		}
	}
	if len(problems) > 0 {
		var b strings.Builder
		b.WriteString(strings.Join(problems, "\n    "))
		for _, c := range all {
			fmt.Fprintf(&b, "\n    order on %-18s %s", c.label+":", orders[c.label])
		}
		return strings.Join(notes, "; "), errors.New(b.String())
	}
	d := fmt.Sprintf("%d messages exactly once on %d servers, identical order = send order [%s]", len(sent), len(all), want)
	if len(notes) > 0 {
		d += "; " + strings.Join(notes, "; ")
	}
	return d, nil
}
