package adminapi

import (
	"net/http/httptest"
	"sort"
	"testing"

	"repeater/internal/config"
	"repeater/storage"
)

func TestPageParams(t *testing.T) {
	for _, tc := range []struct {
		query         string
		offset, limit int
		bad           bool
	}{
		{"", 0, 100, false},
		{"from=20&limit=5", 20, 5, false},
		{"limit=5000", 0, 1000, false},
		{"from=-1", 0, 0, true},
		{"limit=x", 0, 0, true},
	} {
		r := httptest.NewRequest("GET", "/x?"+tc.query, nil)
		o, l, err := page(r, 100)
		if (err != nil) != tc.bad || (!tc.bad && (o != tc.offset || l != tc.limit)) {
			t.Errorf("%q: %d %d %v", tc.query, o, l, err)
		}
	}
	for _, tc := range []struct {
		query   string
		want    bool
		wantErr bool
	}{{"", true, false}, {"guests=false", false, false}, {"guests=TRUE", true, false}, {"guests=1", false, true}} {
		got, err := boolParam(httptest.NewRequest("GET", "/x?"+tc.query, nil), "guests", true)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("%q: %v %v", tc.query, got, err)
		}
	}
}

func TestRoomOrder(t *testing.T) {
	rooms := []*storage.RoomSummary{
		{RoomID: "!a", Name: "beta", JoinedMembers: 1, Published: true},
		{RoomID: "!b", Name: "Alpha", JoinedMembers: 5},
		{RoomID: "!c", Name: "gamma", JoinedMembers: 3, Published: true},
	}
	for _, tc := range []struct {
		by   string
		want string
	}{
		{"name", "!b!a!c"},
		{"joined_members", "!b!c!a"}, // largest first
		{"public", "!b!a!c"},         // false before true, then by ID
	} {
		less, ok := roomOrder(tc.by)
		if !ok {
			t.Fatalf("%s unknown", tc.by)
		}
		rs := append([]*storage.RoomSummary(nil), rooms...)
		sort.SliceStable(rs, func(i, j int) bool {
			if less(rs[i], rs[j]) {
				return true
			}
			if less(rs[j], rs[i]) {
				return false
			}
			return rs[i].RoomID < rs[j].RoomID
		})
		got := ""
		for _, r := range rs {
			got += r.RoomID
		}
		if got != tc.want {
			t.Errorf("%s: %s, want %s", tc.by, got, tc.want)
		}
	}
	if _, ok := roomOrder("bogus"); ok {
		t.Error("bogus order accepted")
	}
}

func TestLocalpart(t *testing.T) {
	a := &API{serverName: "example.org", cfg: config.Defaults()}
	if lp, err := a.localpart("@alice:example.org"); lp != "alice" || err != nil {
		t.Errorf("local: %q %v", lp, err)
	}
	for _, bad := range []string{"@alice:other.org", "alice", "", "@:example.org"} {
		if _, err := a.localpart(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
