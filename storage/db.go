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
	wmu     sync.Mutex // one writer at a time, on both dialects

	qmu     sync.RWMutex
	rewrote map[string]string

	// Prepared statements, by query text, on each side. Preparing is a
	// large part of a small statement's cost in SQLite.
	smu    sync.Mutex
	wstmts map[string]*sql.Stmt
	rstmts map[string]*sql.Stmt
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
	db := &DB{rewrote: map[string]string{}, wstmts: map[string]*sql.Stmt{}, rstmts: map[string]*sql.Stmt{}}
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
		db.Close()
		return nil, fmt.Errorf("storage: connect: %w", err)
	}
	if err := db.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// Close closes all connections.
func (db *DB) Close() error {
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

// IsPostgres reports whether the database is PostgreSQL.
func (db *DB) IsPostgres() bool { return db.dialect == dialectPostgres }

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

// Tx is a write transaction.
type Tx struct {
	db *DB
	tx *sql.Tx
	// streamPos is the last stream position allocated in this transaction.
	streamPos int64
	after     []func()
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

// NextStreamPos allocates the next position on the server's single stream.
// Positions are allocated inside the write transaction, so no reader sees
// N+1 before N.
func (t *Tx) NextStreamPos(ctx context.Context) (int64, error) {
	var pos int64
	err := t.QueryRowContext(ctx, `UPDATE stream_counter SET pos = pos + 1 WHERE id = 1 RETURNING pos`).Scan(&pos)
	if err != nil {
		return 0, err
	}
	t.streamPos = pos
	return pos, nil
}

// AfterCommit registers fn to run once the transaction has committed.
func (t *Tx) AfterCommit(fn func()) { t.after = append(t.after, fn) }

// Write runs fn in the single write transaction path. When fn returns nil the
// transaction is committed before Write returns (durable on return).
func (db *DB) Write(ctx context.Context, fn func(tx *Tx) error) error {
	db.wmu.Lock()
	defer db.wmu.Unlock()
	// The write must not be abandoned half-way because a client went away.
	ctx = context.WithoutCancel(ctx)
	sqlTx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	tx := &Tx{db: db, tx: sqlTx}
	if err := fn(tx); err != nil {
		_ = sqlTx.Rollback()
		return err
	}
	if err := sqlTx.Commit(); err != nil {
		return mapErr(err)
	}
	for _, f := range tx.after {
		f()
	}
	return nil
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
	var pos int64
	err := db.R().QueryRowContext(ctx, `SELECT pos FROM stream_counter WHERE id = 1`).Scan(&pos)
	return pos, err
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
