package storage_test

import (
	"context"
	"errors"
	"sort"
	"testing"

	"repeater/storage"
)

func TestMediaUploadsAndQuotas(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		quota := storage.MediaQuota{User: 100, Total: 150}
		m := storage.LocalMedia{MediaID: "m1", Uploader: "@a:x", ContentType: "image/png", UploadName: "ä b.png", Size: 60, SHA256: "aa", CreatedTS: 1}
		if err := db.StoreMedia(ctx, m, quota); err != nil {
			t.Fatal(err)
		}
		got, err := db.GetMedia(ctx, "m1")
		if err != nil || *got != m {
			t.Fatalf("got %+v %v, want %+v", got, err, m)
		}
		if err := db.StoreMedia(ctx, m, storage.MediaQuota{}); !errors.Is(err, storage.ErrConflict) {
			t.Fatalf("same media ID twice: %v", err)
		}
		// 60 + 50 > 100 for @a, but fine for @b; then the server is full.
		m2 := storage.LocalMedia{MediaID: "m2", Uploader: "@a:x", Size: 50, SHA256: "aa", CreatedTS: 2}
		if err := db.StoreMedia(ctx, m2, quota); !errors.Is(err, storage.ErrMediaUserQuota) {
			t.Fatalf("over user quota: %v", err)
		}
		m2.Uploader = "@b:x"
		if err := db.StoreMedia(ctx, m2, quota); err != nil {
			t.Fatal(err)
		}
		m3 := storage.LocalMedia{MediaID: "m3", Uploader: "@c:x", Size: 41, SHA256: "bb", CreatedTS: 3}
		if err := db.StoreMedia(ctx, m3, quota); !errors.Is(err, storage.ErrMediaTotalQuota) {
			t.Fatalf("over total quota: %v", err)
		}
		if err := db.StoreMedia(ctx, m3, storage.MediaQuota{}); err != nil {
			t.Fatal(err)
		}
		user, total, err := db.MediaUsage(ctx, "@a:x")
		if err != nil || user != 60 || total != 151 {
			t.Fatalf("usage: %d %d %v", user, total, err)
		}
		if _, err := db.GetMedia(ctx, "nope"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("missing media: %v", err)
		}
		if ref, err := db.MediaFileReferenced(ctx, "aa"); err != nil || !ref {
			t.Fatalf("aa referenced: %v %v", ref, err)
		}
		if ref, err := db.MediaFileReferenced(ctx, "cc"); err != nil || ref {
			t.Fatalf("cc referenced: %v %v", ref, err)
		}
		if err := db.SetMediaQuarantined(ctx, "", "m1", true); err != nil {
			t.Fatal(err)
		}
		if got, _ := db.GetMedia(ctx, "m1"); !got.Quarantined {
			t.Fatal("not quarantined")
		}
		if err := db.SetMediaQuarantined(ctx, "", "nope", true); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("quarantine missing: %v", err)
		}
	})
}

func TestMediaPendingUploads(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		for i, id := range []string{"p1", "p2"} {
			if err := db.CreatePendingMedia(ctx, storage.LocalMedia{MediaID: id, Uploader: "@a:x", CreatedTS: int64(10 + i), ExpiresTS: 100}, 2); err != nil {
				t.Fatal(err)
			}
		}
		if err := db.CreatePendingMedia(ctx, storage.LocalMedia{MediaID: "p3", Uploader: "@a:x", CreatedTS: 50, ExpiresTS: 200}, 2); !errors.Is(err, storage.ErrMediaPendingLimit) {
			t.Fatalf("third pending upload: %v", err)
		}
		p, err := db.GetMedia(ctx, "p1")
		if err != nil || !p.Pending() || p.ExpiresTS != 100 {
			t.Fatalf("pending: %+v %v", p, err)
		}
		done := storage.LocalMedia{MediaID: "p1", Uploader: "@a:x", ContentType: "text/plain", Size: 5, SHA256: "ff"}
		if err := db.CompletePendingMedia(ctx, done, storage.MediaQuota{}); err != nil {
			t.Fatal(err)
		}
		if err := db.CompletePendingMedia(ctx, done, storage.MediaQuota{}); !errors.Is(err, storage.ErrConflict) {
			t.Fatalf("second upload to the same ID: %v", err)
		}
		other := done
		other.MediaID, other.Uploader = "p2", "@b:x"
		if err := db.CompletePendingMedia(ctx, other, storage.MediaQuota{}); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("upload to another user's ID: %v", err)
		}
		p, _ = db.GetMedia(ctx, "p1")
		if p.Pending() || p.Size != 5 || p.ContentType != "text/plain" || p.CreatedTS != 10 {
			t.Fatalf("completed: %+v", p)
		}
		// Once p2 lapses, a new reservation is allowed and p2 is gone.
		if err := db.CreatePendingMedia(ctx, storage.LocalMedia{MediaID: "p3", Uploader: "@a:x", CreatedTS: 150, ExpiresTS: 300}, 1); err != nil {
			t.Fatal(err)
		}
		if _, err := db.GetMedia(ctx, "p2"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("lapsed reservation kept: %v", err)
		}
	})
}

func TestRemoteMediaCacheEviction(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		for i, id := range []string{"r1", "r2", "r3"} {
			if err := db.PutRemoteMedia(ctx, storage.RemoteMedia{Origin: "o.x", MediaID: id, SHA256: "s" + id, Size: 100, CreatedTS: 1, LastAccessTS: int64(10 + i)}); err != nil {
				t.Fatal(err)
			}
		}
		for _, th := range []storage.MediaThumbnail{
			{Origin: "o.x", MediaID: "r1", Width: 32, Height: 32, Method: "crop", ContentType: "image/png", SHA256: "t1", Size: 10},
			{Origin: "", MediaID: "local", Width: 32, Height: 32, Method: "crop", ContentType: "image/png", SHA256: "t2", Size: 1000},
		} {
			if err := db.PutMediaThumbnail(ctx, th); err != nil {
				t.Fatal(err)
			}
		}
		if got, err := db.GetMediaThumbnail(ctx, "o.x", "r1", 32, 32, "crop"); err != nil || got.SHA256 != "t1" || got.Size != 10 {
			t.Fatalf("thumbnail: %+v %v", got, err)
		}
		if _, err := db.GetMediaThumbnail(ctx, "o.x", "r1", 96, 96, "crop"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("missing thumbnail: %v", err)
		}
		if used, err := db.RemoteMediaCacheUsage(ctx); err != nil || used != 310 {
			t.Fatalf("usage %d %v, want 310 (local thumbnails do not count)", used, err)
		}
		// r1 is the least recently used, but touching it makes r2 the
		// first to go.
		db.TouchRemoteMedia("o.x", "r1", 50)
		db.Write(ctx, func(*storage.Tx) error { return nil }) // wait for the touch
		if got, _ := db.GetRemoteMedia(ctx, "o.x", "r1"); got.LastAccessTS != 50 {
			t.Fatalf("touch: %+v", got)
		}
		shas, err := db.EvictRemoteMedia(ctx, 250, "", "")
		if err != nil || len(shas) != 1 || shas[0] != "sr2" {
			t.Fatalf("evicted %v %v, want [sr2]", shas, err)
		}
		// Keeping r3 (the newest fetch) evicts r1 and its thumbnail.
		shas, err = db.EvictRemoteMedia(ctx, 100, "o.x", "r3")
		sort.Strings(shas)
		if err != nil || len(shas) != 2 || shas[0] != "sr1" || shas[1] != "t1" {
			t.Fatalf("evicted %v %v, want [sr1 t1]", shas, err)
		}
		if _, err := db.GetRemoteMedia(ctx, "o.x", "r1"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("evicted media still there: %v", err)
		}
		if _, err := db.GetMediaThumbnail(ctx, "o.x", "r1", 32, 32, "crop"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("evicted media's thumbnail still there: %v", err)
		}
		if used, _ := db.RemoteMediaCacheUsage(ctx); used != 100 {
			t.Fatalf("usage after eviction %d", used)
		}
		// Nothing else may go: r3 stays even over the limit.
		if shas, err := db.EvictRemoteMedia(ctx, 0, "o.x", "r3"); err != nil || len(shas) != 0 {
			t.Fatalf("evicted %v %v", shas, err)
		}
		if shas, err := db.DeleteRemoteMedia(ctx, "o.x", "r3"); err != nil || len(shas) != 1 {
			t.Fatalf("delete: %v %v", shas, err)
		}
	})
}
