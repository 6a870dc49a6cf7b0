package mediaapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"repeater/storage"
)

// fileStore keeps files content-addressed: <root>/ab/cd/abcd...(sha256 hex).
// A new file is written under <root>/tmp, synced, then renamed into place,
// so a file at its final path is always complete. Identical content is
// stored once.
//
// Files are shared by every row that names their hash, so one is deleted
// only when no row does. gcMu orders that check against new references:
// whoever places a file and records it holds the read side from before
// the file is placed until the row is committed; the collector holds the
// write side while it checks and deletes.
type fileStore struct {
	root string
	tmp  string
	gcMu sync.RWMutex
}

func newFileStore(root string) (*fileStore, error) {
	s := &fileStore{root: root, tmp: filepath.Join(root, "tmp")}
	// Left-overs of uploads interrupted by a crash.
	os.RemoveAll(s.tmp)
	if err := os.MkdirAll(s.tmp, 0o750); err != nil {
		return nil, err
	}
	return s, nil
}

// errBodyTooLarge: the content went over the size limit.
var errBodyTooLarge = errors.New("media: content too large")

// readError marks a failure to read the incoming content (the client or
// remote server), as opposed to a failure to store it.
type readError struct{ err error }

func (e *readError) Error() string { return "media: reading content: " + e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

type trackingReader struct {
	r   io.Reader
	err error
}

func (t *trackingReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF {
		t.err = err
	}
	return n, err
}

func validSHA(sha string) bool {
	if len(sha) != 64 {
		return false
	}
	_, err := hex.DecodeString(sha)
	return err == nil
}

func (s *fileStore) path(sha string) string {
	return filepath.Join(s.root, sha[:2], sha[2:4], sha)
}

// put writes r (at most limit bytes, else errBodyTooLarge) into the store
// and returns its SHA-256 and size. The caller holds gcMu.RLock until the
// row naming the file is committed.
func (s *fileStore) put(r io.Reader, limit int64) (sha string, size int64, err error) {
	f, err := os.CreateTemp(s.tmp, "up-")
	if err != nil {
		return "", 0, err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	h := sha256.New()
	tr := &trackingReader{r: r}
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(tr, limit+1))
	if tr.err != nil {
		return "", 0, &readError{tr.err}
	}
	if err != nil {
		return "", 0, err
	}
	if n > limit {
		return "", 0, errBodyTooLarge
	}
	if err = f.Sync(); err != nil {
		return "", 0, err
	}
	if err = f.Close(); err != nil {
		return "", 0, err
	}
	sha = hex.EncodeToString(h.Sum(nil))
	final := s.path(sha)
	if st, serr := os.Stat(final); serr == nil && st.Size() == n {
		os.Remove(tmp) // the same bytes are stored already
		return sha, n, nil
	}
	if err = os.MkdirAll(filepath.Dir(final), 0o750); err != nil {
		return "", 0, err
	}
	if err = os.Rename(tmp, final); err != nil {
		return "", 0, err
	}
	return sha, n, nil
}

// open opens a stored file.
func (s *fileStore) open(sha string) (*os.File, error) {
	if !validSHA(sha) {
		return nil, os.ErrNotExist
	}
	return os.Open(s.path(sha))
}

// has reports whether a file is stored.
func (s *fileStore) has(sha string) bool {
	if !validSHA(sha) {
		return false
	}
	_, err := os.Stat(s.path(sha))
	return err == nil
}

// collect deletes those of the files that no row references any more.
func (s *fileStore) collect(ctx context.Context, db *storage.DB, shas ...string) error {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	seen := map[string]bool{}
	for _, sha := range shas {
		if seen[sha] || !validSHA(sha) {
			continue
		}
		seen[sha] = true
		ref, err := db.MediaFileReferenced(ctx, sha)
		if err != nil {
			return err
		}
		if !ref {
			if err := os.Remove(s.path(sha)); err != nil && !os.IsNotExist(err) {
				return err
			}
		}
	}
	return nil
}

// count returns how many files are stored (tests).
func (s *fileStore) count() (int, error) {
	n := 0
	err := filepath.WalkDir(s.root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p == s.tmp {
			return filepath.SkipDir
		}
		if !d.IsDir() {
			n++
		}
		return nil
	})
	return n, err
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
