package config

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestMediaPathAndLimits(t *testing.T) {
	c := Defaults()
	c.Dir = "/etc/repeater"
	if c.Media.MaxUploadSize != 50<<20 || c.Media.RemoteCacheSize != 1<<30 {
		t.Fatalf("defaults: %+v", c.Media)
	}
	for db, want := range map[string]string{
		"repeater.db":                  "/etc/repeater/media",
		"/var/lib/repeater/r.db":       "/var/lib/repeater/media",
		"file:/data/r.db?mode=rwc":     "/data/media",
		"postgres://u@localhost/r":     "/etc/repeater/media",
		"postgresql://u@localhost/r?x": "/etc/repeater/media",
	} {
		c.Database = db
		if got := c.MediaPath(); got != filepath.FromSlash(want) {
			t.Errorf("database %s: media in %s, want %s", db, got, want)
		}
	}
	c.Media.Path = "files"
	if got := c.MediaPath(); got != "/etc/repeater/files" {
		t.Errorf("relative media.path: %s", got)
	}
	c.Media.MaxUploadSize = 0
	c.Media.UserQuota = -1
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "media.max_upload_size") || !strings.Contains(err.Error(), "user_quota") {
		t.Fatalf("bad media settings: %v", err)
	}
}
