package mediaapi

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"repeater/storage"
)

func TestWaitingForAsyncUpload(t *testing.T) {
	m := newTestAPI(t, nil, nil)
	ctx := context.Background()
	if err := m.db.CreatePendingMedia(ctx, storage.LocalMedia{MediaID: "p", Uploader: "@a:local.test", CreatedTS: nowMS(), ExpiresTS: nowMS() + 60000}, 5); err != nil {
		t.Fatal(err)
	}
	if _, err := m.resolveLocal(ctx, "p", 10*time.Millisecond); !errors.Is(err, errNotYetUploaded) {
		t.Fatalf("pending: %v", err)
	}
	if len(m.waiters) != 0 {
		t.Fatalf("%d waiters left after a timeout", len(m.waiters))
	}
	got := make(chan error, 3)
	for i := 0; i < 3; i++ {
		go func() {
			md, err := m.resolveLocal(ctx, "p", 10*time.Second)
			if err == nil && md.Size != 5 {
				err = errors.New("wrong size")
			}
			got <- err
		}()
	}
	time.Sleep(50 * time.Millisecond)
	err := m.storeUpload(ctx, bytes.NewReader([]byte("hello")), func(sha string, size int64) error {
		return m.db.CompletePendingMedia(ctx, storage.LocalMedia{MediaID: "p", Uploader: "@a:local.test", ContentType: "text/plain", Size: size, SHA256: sha}, m.quota)
	})
	if err != nil {
		t.Fatal(err)
	}
	m.uploaded("p")
	for i := 0; i < 3; i++ {
		select {
		case err := <-got:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("waiters not woken")
		}
	}
	m.wmu.Lock()
	defer m.wmu.Unlock()
	if len(m.waiters) != 0 {
		t.Fatalf("%d waiters left", len(m.waiters))
	}
}

func TestFlightSurvivesPanic(t *testing.T) {
	m := newTestAPI(t, nil, nil)
	_, err := m.thumbs.do(context.Background(), &m.bg, "k", func() (any, error) { panic("decoder bug") })
	if err == nil {
		t.Fatal("panic not reported")
	}
}
