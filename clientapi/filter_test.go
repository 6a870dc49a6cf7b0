package clientapi

import "testing"

func TestValidateFilter(t *testing.T) {
	good := []string{
		`{}`,
		`{"room":{"timeline":{"limit":10,"types":["m.room.message"],"rooms":["!a:b","!v12roomid"]},"state":{"lazy_load_members":true}}}`,
		`{"presence":{"types":[]},"account_data":{"not_types":["x"]},"event_format":"client"}`,
	}
	bad := []string{
		`{"presence":"not_an_object"}`,
		`{"room":{"timeline":"not_an_object"}}`,
		`{"room":{"timeline":{"rooms":"not_a_list"}}}`,
		`{"room":{"timeline":{"types":[0]}}}`,
		`{"room":{"timeline":{"rooms":["not_a_room_id"]}}}`,
		`{"room":{"timeline":{"senders":["not_a_sender_id"]}}}`,
		`{"room":{"state":{"lazy_load_members":"true"}}}`,
		`{"room":{"state":{"include_redundant_members":1}}}`,
		`{"room":{"timeline":{"limit":"10"}}}`,
		`{"event_format":"weird"}`,
	}
	for _, f := range good {
		if err := validateFilter([]byte(f)); err != nil {
			t.Errorf("%s rejected: %v", f, err)
		}
	}
	for _, f := range bad {
		if err := validateFilter([]byte(f)); err == nil {
			t.Errorf("%s accepted", f)
		}
	}
}
