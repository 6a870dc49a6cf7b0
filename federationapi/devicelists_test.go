package federationapi

import (
	"testing"

	"github.com/tidwall/gjson"

	"repeater/storage"
)

// keys/query answers from a copy of a remote device list: devices with
// keys only (those asked for, if any), display names in unsigned.
func TestRemoteDeviceKeys(t *testing.T) {
	l := &storage.RemoteDeviceList{UserID: "@bob:remote", Devices: []storage.RemoteDevice{
		{DeviceID: "A", DisplayName: "phone", Keys: []byte(`{"device_id":"A","unsigned":{"x":1}}`)},
		{DeviceID: "B", Keys: []byte(`{"device_id":"B"}`)},
		{DeviceID: "C", DisplayName: "no keys"},
	}}
	for _, c := range []struct {
		only []string
		want map[string]string // device -> unsigned.device_display_name ("-": absent)
	}{
		{nil, map[string]string{"A": "phone", "B": "-"}},
		{[]string{"B", "C"}, map[string]string{"B": "-"}},
	} {
		got := gjson.ParseBytes(remoteDeviceKeys(l, c.only))
		if n := len(got.Map()); n != len(c.want) {
			t.Fatalf("only %v: %s", c.only, got.Raw)
		}
		for dev, name := range c.want {
			d := got.Get(dev)
			if d.Get("device_id").Str != dev {
				t.Fatalf("only %v: device %s: %s", c.only, dev, got.Raw)
			}
			if n := d.Get("unsigned.device_display_name"); (name == "-" && n.Exists()) || (name != "-" && n.Str != name) {
				t.Fatalf("only %v: device %s name: %s", c.only, dev, d.Raw)
			}
		}
	}
	if got := gjson.ParseBytes(remoteDeviceKeys(l, nil)); got.Get("A.unsigned.x").Int() != 1 {
		t.Fatalf("other unsigned fields lost: %s", got.Raw)
	}
}
