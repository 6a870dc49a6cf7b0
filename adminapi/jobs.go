package adminapi

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"repeater/internal/auth"
	"repeater/internal/httputil"
)

// jobs are background operations (history purges, room deletions) whose
// status is kept in memory: a restart forgets them (a purge cut short
// leaves the room consistent; running it again finishes it).
type jobs struct {
	mu     sync.Mutex
	m      map[string]*job
	order  []string // IDs, oldest first
	wg     sync.WaitGroup
	ctx    context.Context
	cancel context.CancelFunc
	log    *slog.Logger
}

type job struct {
	kind   string // "purge" or "delete"
	roomID string
	status string // active, complete, failed
	err    string
	result *DeleteRoomResult
}

// maxJobs bounds how many finished jobs are remembered.
const maxJobs = 1000

func (js *jobs) init(log *slog.Logger) {
	js.log = log
	js.m = map[string]*job{}
	js.ctx, js.cancel = context.WithCancel(context.Background())
}

func (js *jobs) close() {
	js.cancel()
	js.wg.Wait()
}

// start runs fn in the background and returns the job's ID.
func (js *jobs) start(kind, roomID string, fn func(ctx context.Context, j *job) error) string {
	id := auth.RandomString(16, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
	j := &job{kind: kind, roomID: roomID, status: "active"}
	js.mu.Lock()
	js.m[id] = j
	js.order = append(js.order, id)
	for len(js.order) > maxJobs {
		old := js.order[0]
		if js.m[old].status == "active" {
			break
		}
		delete(js.m, old)
		js.order = js.order[1:]
	}
	js.mu.Unlock()
	js.wg.Add(1)
	go func() {
		defer js.wg.Done()
		ctx, cancel := context.WithTimeout(js.ctx, 6*time.Hour)
		defer cancel()
		err := fn(ctx, j)
		js.mu.Lock()
		defer js.mu.Unlock()
		if err != nil {
			// Matrix errors are told; anything else is logged, not leaked.
			msg := "Internal server error"
			if e := httputil.AsError(err); e != nil {
				msg = e.Message
			} else {
				js.log.Error("admin job failed", "kind", kind, "room", roomID, "err", err)
			}
			j.status, j.err = "failed", msg
		} else {
			j.status = "complete"
		}
	}()
	return id
}

// get returns a copy of a job.
func (js *jobs) get(id string) (job, bool) {
	js.mu.Lock()
	defer js.mu.Unlock()
	j, ok := js.m[id]
	if !ok {
		return job{}, false
	}
	return *j, true
}
