// Package storage is Repeater's single SQL layer. SQL is written once with
// PostgreSQL-style $N placeholders; the SQLite dialect rewrites them to ?N
// (plain $N in SQLite binds in order of appearance, which would silently swap
// out-of-order arguments).
//
// Writes go through one path (DB.Write) that serialises them, so stream
// positions assigned inside a write transaction become visible in order.
package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	_ "github.com/jackc/pgx/v5/stdlib" // PostgreSQL driver "pgx"
	"github.com/mattn/go-sqlite3"
)

// ErrNotFound is returned when a row that was asked for does not exist. It
// wraps fs.ErrNotExist so that the HTTP layer (which may not import storage)
// can map it to 404 M_NOT_FOUND.
var ErrNotFound = fmt.Errorf("storage: not found: %w", fs.ErrNotExist)

// ErrConflict is returned when a write violates a uniqueness constraint.
var ErrConflict = errors.New("storage: conflict")

type dialect int

const (
	dialectSQLite dialect = iota
	dialectPostgres
)

// DB is the server's one database.
type DB struct {
	dialect dialect
	write   *sql.DB // SQLite: the writer pool; PostgreSQL: same pool as read
	read    *sql.DB

	// The write queue (see Submit); nextPos is the last reserved position.
	qmu2       sync.Mutex
	queue      []*write
	nextPos    int64
	closed     bool
	kick       chan struct{}
	writerDone chan struct{}
	visible    atomic.Int64 // highest committed stream position

	qmu     sync.RWMutex
	rewrote map[string]string

	// Prepared statements, by query text, on each side. Preparing is a
	// large part of a small statement's cost in SQLite.
	smu    sync.Mutex
	wstmts map[string]*sql.Stmt
	rstmts map[string]*sql.Stmt

	tokens *tokenCache // access-token hash -> device
	rel    relCache    // rooms known to have relations (relations.go)

	kcMu  sync.Mutex
	kc    map[string]keyCounts // user|device -> key counts (see DeviceKeyCounts)
	kcGen uint64
	// tdPending: devices that may hold to-device messages (absent: unknown).
	tdPending map[string]bool

	prMu  sync.Mutex
	pr    map[string][]byte // localpart -> stored push rules (nil: defaults)
	prGen uint64
}

// stmt returns a cached prepared statement for query on pool p.
func (db *DB) stmt(ctx context.Context, p *sql.DB, cache map[string]*sql.Stmt, query string) (*sql.Stmt, error) {
	db.smu.Lock()
	defer db.smu.Unlock()
	if st, ok := cache[query]; ok {
		return st, nil
	}
	st, err := p.PrepareContext(ctx, db.q(query))
	if err != nil {
		return nil, err
	}
	if len(cache) < 512 {
		cache[query] = st
	}
	return st, nil
}

// Open opens (creating if needed) the database named by dsn and applies any
// pending migrations. A dsn starting with postgres:// or postgresql:// selects
// PostgreSQL; anything else is a SQLite file path (optionally "file:" URL).
func Open(ctx context.Context, dsn string) (*DB, error) {
	db := &DB{rewrote: map[string]string{}, wstmts: map[string]*sql.Stmt{}, rstmts: map[string]*sql.Stmt{}, tokens: newTokenCache(20000)}
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		db.dialect = dialectPostgres
		p, err := sql.Open("pgx", dsn)
		if err != nil {
			return nil, err
		}
		p.SetMaxOpenConns(16)
		p.SetMaxIdleConns(8)
		db.write, db.read = p, p
	} else {
		db.dialect = dialectSQLite
		path := strings.TrimPrefix(dsn, "file:")
		if i := strings.IndexByte(path, '?'); i >= 0 {
			path = path[:i]
		}
		if path == "" {
			return nil, fmt.Errorf("storage: empty SQLite path")
		}
		// WAL with synchronous=NORMAL: a committed transaction survives the
		// process being killed (it is in the WAL file); only an OS crash or
		// power loss can lose the last commits.
		base := "file:" + (&url.URL{Path: path}).EscapedPath() +
			"?_journal_mode=WAL&_busy_timeout=10000&_foreign_keys=on&_synchronous=NORMAL&_cache_size=-8000"
		w, err := sql.Open("sqlite3", base+"&_txlock=immediate")
		if err != nil {
			return nil, err
		}
		// Writes are serialised by wmu; the second connection lets
		// statements be prepared while a transaction holds the first.
		w.SetMaxOpenConns(2)
		w.SetMaxIdleConns(2)
		w.SetConnMaxLifetime(0)
		r, err := sql.Open("sqlite3", base+"&_txlock=deferred&_query_only=true")
		if err != nil {
			w.Close()
			return nil, err
		}
		r.SetMaxOpenConns(4)
		r.SetMaxIdleConns(4)
		db.write, db.read = w, r
	}
	if err := db.write.PingContext(ctx); err != nil {
		db.closeConns()
		return nil, fmt.Errorf("storage: connect: %w", err)
	}
	if err := db.migrate(ctx); err != nil {
		db.closeConns()
		return nil, err
	}
	var pos int64
	if err := db.write.QueryRowContext(ctx, `SELECT pos FROM stream_counter WHERE id = 1`).Scan(&pos); err != nil {
		db.closeConns()
		return nil, err
	}
	db.nextPos = pos
	db.visible.Store(pos)
	db.kick = make(chan struct{}, 1)
	db.writerDone = make(chan struct{})
	go db.writer()
	return db, nil
}

// Close finishes queued writes and closes all connections.
func (db *DB) Close() error {
	db.qmu2.Lock()
	already := db.closed
	db.closed = true
	db.qmu2.Unlock()
	if !already {
		select {
		case db.kick <- struct{}{}:
		default:
		}
		<-db.writerDone
	}
	return db.closeConns()
}

func (db *DB) closeConns() error {
	db.smu.Lock()
	for _, st := range db.wstmts {
		st.Close()
	}
	for _, st := range db.rstmts {
		st.Close()
	}
	db.wstmts, db.rstmts = map[string]*sql.Stmt{}, map[string]*sql.Stmt{}
	db.smu.Unlock()
	err := db.write.Close()
	if db.read != db.write {
		if e := db.read.Close(); err == nil {
			err = e
		}
	}
	return err
}

// q rewrites a query for the dialect; results are cached.
func (db *DB) q(query string) string {
	if db.dialect == dialectPostgres {
		return query
	}
	db.qmu.RLock()
	out, ok := db.rewrote[query]
	db.qmu.RUnlock()
	if ok {
		return out
	}
	out = rewriteForSQLite(query)
	db.qmu.Lock()
	db.rewrote[query] = out
	db.qmu.Unlock()
	return out
}

// rewriteForSQLite turns $N into ?N outside string literals.
func rewriteForSQLite(query string) string {
	var b strings.Builder
	inStr := false
	for i := 0; i < len(query); i++ {
		c := query[i]
		if c == '\'' {
			inStr = !inStr
		}
		if c == '$' && !inStr && i+1 < len(query) && query[i+1] >= '0' && query[i+1] <= '9' {
			b.WriteByte('?')
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// Querier is what both the read side and a write transaction offer.
type Querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// Tx is the write transaction of one batch; each submitted write runs in
// its own savepoint inside it.
type Tx struct {
	db  *DB
	tx  *sql.Tx
	pos []int64 // positions reserved for the current write
}

func (t *Tx) prepared(ctx context.Context, query string) *sql.Stmt {
	st, err := t.db.stmt(ctx, t.db.write, t.db.wstmts, query)
	if err != nil {
		return nil
	}
	return t.tx.StmtContext(ctx, st)
}

func (t *Tx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := t.prepared(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return t.tx.QueryContext(ctx, t.db.q(query), args...)
}
func (t *Tx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := t.prepared(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return t.tx.QueryRowContext(ctx, t.db.q(query), args...)
}
func (t *Tx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := t.prepared(ctx, query); st != nil {
		res, err := st.ExecContext(ctx, args...)
		return res, mapErr(err)
	}
	res, err := t.tx.ExecContext(ctx, t.db.q(query), args...)
	return res, mapErr(err)
}

// Positions returns the stream positions reserved for this write.
func (t *Tx) Positions() []int64 { return t.pos }

// write is one submitted write waiting for the batch writer.
type write struct {
	pos    []int64
	fn     func(tx *Tx) error
	onFail func()
	done   chan error
}

// Submit queues fn to run in the next batch transaction, reserving n
// positions on the server's single stream for it. Positions are reserved in
// queue order and batches commit in queue order, so when a batch is visible
// every position up to its highest is settled: no reader sees N+1 before N.
//
// Submit returns the reserved positions at once; the channel receives the
// outcome once the batch has committed (durable) or failed. onFail, if set,
// runs in the writer before any later write when this write does not
// commit, so a caller that built on an optimistic in-memory state can
// invalidate it before anything builds further on it.
func (db *DB) Submit(n int, fn func(tx *Tx) error, onFail func()) ([]int64, <-chan error) {
	w := &write{fn: fn, onFail: onFail, done: make(chan error, 1)}
	db.qmu2.Lock()
	if db.closed {
		db.qmu2.Unlock()
		w.done <- errors.New("storage: closed")
		return nil, w.done
	}
	if n > 0 {
		w.pos = make([]int64, n)
		for i := range w.pos {
			db.nextPos++
			w.pos[i] = db.nextPos
		}
	}
	db.queue = append(db.queue, w)
	db.qmu2.Unlock()
	select {
	case db.kick <- struct{}{}:
	default:
	}
	return w.pos, w.done
}

// Write runs fn in the write path and waits until it is durable.
func (db *DB) Write(ctx context.Context, fn func(tx *Tx) error) error {
	_, done := db.Submit(0, fn, nil)
	return <-done
}

// WritePos is Write with n reserved stream positions (tx.Positions()).
func (db *DB) WritePos(ctx context.Context, n int, fn func(tx *Tx) error) ([]int64, error) {
	pos, done := db.Submit(n, fn, nil)
	return pos, <-done
}

// maxBatch bounds how many writes share one transaction.
const maxBatch = 256

// writer is the single goroutine that commits batches.
func (db *DB) writer() {
	defer close(db.writerDone)
	for {
		db.qmu2.Lock()
		for len(db.queue) == 0 && !db.closed {
			db.qmu2.Unlock()
			<-db.kick
			db.qmu2.Lock()
		}
		if len(db.queue) == 0 && db.closed {
			db.qmu2.Unlock()
			return
		}
		n := min(len(db.queue), maxBatch)
		batch := make([]*write, n)
		copy(batch, db.queue)
		db.queue = db.queue[n:]
		db.qmu2.Unlock()
		db.commitBatch(batch)
	}
}

func (db *DB) commitBatch(batch []*write) {
	ctx := context.Background()
	results := make([]error, len(batch))
	fail := func(err error) {
		for i, w := range batch {
			if results[i] == nil {
				results[i] = err
			}
			if w.onFail != nil {
				w.onFail()
			}
			w.done <- results[i]
		}
	}
	sqlTx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		fail(err)
		return
	}
	tx := &Tx{db: db, tx: sqlTx}
	var maxPos int64
	for i, w := range batch {
		if _, err := tx.ExecContext(ctx, `SAVEPOINT w`); err != nil {
			sqlTx.Rollback()
			fail(err)
			return
		}
		tx.pos = w.pos
		err := safeRun(w.fn, tx)
		if err != nil {
			results[i] = err
			if _, rerr := tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT w`); rerr != nil {
				sqlTx.Rollback()
				fail(rerr)
				return
			}
			if w.onFail != nil {
				w.onFail()
				batch[i].onFail = nil
			}
		}
		if _, err := tx.ExecContext(ctx, `RELEASE SAVEPOINT w`); err != nil {
			sqlTx.Rollback()
			fail(err)
			return
		}
		for _, p := range w.pos {
			maxPos = max(maxPos, p)
		}
	}
	if maxPos > 0 {
		if _, err := tx.ExecContext(ctx, `UPDATE stream_counter SET pos = $1 WHERE id = 1 AND pos < $1`, maxPos); err != nil {
			sqlTx.Rollback()
			fail(err)
			return
		}
	}
	if err := sqlTx.Commit(); err != nil {
		fail(mapErr(err))
		return
	}
	if maxPos > 0 {
		db.visible.Store(maxPos)
	}
	for i, w := range batch {
		w.done <- results[i]
	}
}

// safeRun runs fn, turning a panic into an error so one bad write cannot
// take the writer down.
func safeRun(fn func(tx *Tx) error, tx *Tx) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("storage: write panicked: %v", v)
		}
	}()
	return fn(tx)
}

// reader is the read side, with dialect rewriting.
type reader struct{ db *DB }

func (r reader) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st, err := r.db.stmt(ctx, r.db.read, r.db.rstmts, query); err == nil {
		return st.QueryContext(ctx, args...)
	}
	return r.db.read.QueryContext(ctx, r.db.q(query), args...)
}
func (r reader) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st, err := r.db.stmt(ctx, r.db.read, r.db.rstmts, query); err == nil {
		return st.QueryRowContext(ctx, args...)
	}
	return r.db.read.QueryRowContext(ctx, r.db.q(query), args...)
}
func (r reader) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return nil, errors.New("storage: write on the read side")
}

// R returns the read side.
func (db *DB) R() Querier { return reader{db} }

// StreamPos returns the latest committed stream position.
func (db *DB) StreamPos(ctx context.Context) (int64, error) {
	return db.visible.Load(), nil
}

func mapErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	var se sqlite3.Error
	if errors.As(err, &se) && se.Code == sqlite3.ErrConstraint &&
		(se.ExtendedCode == sqlite3.ErrConstraintUnique || se.ExtendedCode == sqlite3.ErrConstraintPrimaryKey) {
		return fmt.Errorf("%w: %v", ErrConflict, err)
	}
	if strings.Contains(err.Error(), "SQLSTATE 23505") {
		return fmt.Errorf("%w: %v", ErrConflict, err)
	}
	return err
}

// scanErr maps sql.ErrNoRows to ErrNotFound.
func scanErr(err error) error { return mapErr(err) }

// inList returns "$k,$k+1,..." for n arguments starting at k.
func inList(start, n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(start + i))
	}
	return b.String()
}

// scanAll returns a reader of every row of a query, each read with scan,
// for use as scanAll(scan)(db.R().QueryContext(...)): the loop that most
// list queries share.
func scanAll[T any](scan func(sc interface{ Scan(...any) error }) (T, error)) func(*sql.Rows, error) ([]T, error) {
	return func(rows *sql.Rows, err error) ([]T, error) {
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		var out []T
		for rows.Next() {
			v, err := scan(rows)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, rows.Err()
	}
}

// deref adapts a scanner returning a pointer to one returning a value.
func deref[T any](scan func(sc interface{ Scan(...any) error }) (*T, error)) func(sc interface{ Scan(...any) error }) (T, error) {
	return func(sc interface{ Scan(...any) error }) (T, error) {
		p, err := scan(sc)
		if err != nil {
			var zero T
			return zero, err
		}
		return *p, nil
	}
}
