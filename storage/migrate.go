package storage

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

//go:embed schema/*.sql
var schemaFS embed.FS

// postMigrate holds Go steps that run after a migration's SQL, in its
// transaction (e.g. filling a new table from existing rows).
var postMigrate = map[int]func(ctx context.Context, db *DB, tx *sql.Tx) error{
	8: backfillRelations, // relations.go
}

// migrate applies every embedded schema file whose number is not yet recorded
// in schema_migrations, each in its own transaction.
func (db *DB) migrate(ctx context.Context) error {
	if _, err := db.write.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_ts BIGINT NOT NULL)`); err != nil {
		return fmt.Errorf("storage: migrations table: %w", err)
	}
	entries, err := schemaFS.ReadDir("schema")
	if err != nil {
		return err
	}
	type mig struct {
		version int
		name    string
	}
	var migs []mig
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return fmt.Errorf("storage: bad migration file name %q", e.Name())
		}
		migs = append(migs, mig{v, e.Name()})
	}
	sort.Slice(migs, func(i, j int) bool { return migs[i].version < migs[j].version })
	for _, m := range migs {
		var n int
		if err := db.write.QueryRowContext(ctx, db.q(`SELECT COUNT(*) FROM schema_migrations WHERE version = $1`), m.version).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			continue
		}
		body, err := schemaFS.ReadFile("schema/" + m.name)
		if err != nil {
			return err
		}
		stmts := db.dialectDDL(string(body))
		tx, err := db.write.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		for _, s := range splitStatements(stmts) {
			if _, err := tx.ExecContext(ctx, s); err != nil {
				tx.Rollback()
				return fmt.Errorf("storage: migration %s: %w\n%s", m.name, err, s)
			}
		}
		if f := postMigrate[m.version]; f != nil {
			if err := f(ctx, db, tx); err != nil {
				tx.Rollback()
				return fmt.Errorf("storage: migration %s: %w", m.name, err)
			}
		}
		if _, err := tx.ExecContext(ctx, db.q(`INSERT INTO schema_migrations (version, applied_ts) VALUES ($1, $2)`), m.version, nowMS()); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

func (db *DB) dialectDDL(s string) string {
	s = onlyDialect(s, db.dialect)
	if db.dialect == dialectPostgres {
		s = strings.ReplaceAll(s, "{{INTPK}}", "BIGINT PRIMARY KEY")
		s = strings.ReplaceAll(s, "{{SERIAL}}", "BIGSERIAL PRIMARY KEY")
		return strings.ReplaceAll(s, "{{PK}}", "BIGSERIAL PRIMARY KEY")
	}
	// INTEGER PRIMARY KEY is SQLite's rowid; AUTOINCREMENT would cost an
	// extra page write per insert, so only {{SERIAL}} (IDs that must never
	// be reused, even after deletes) has it.
	s = strings.ReplaceAll(s, "{{INTPK}}", "INTEGER PRIMARY KEY")
	s = strings.ReplaceAll(s, "{{SERIAL}}", "INTEGER PRIMARY KEY AUTOINCREMENT")
	return strings.ReplaceAll(s, "{{PK}}", "INTEGER PRIMARY KEY")
}

// onlyDialect drops the statements marked for the other dialect. A comment
// line "-- sqlite-only" or "-- postgres-only" marks the statement after it
// (up to the next line ending in ";"); unmarked statements run on both.
// For what the two dialects cannot share (full-text search tables).
func onlyDialect(s string, d dialect) string {
	var b strings.Builder
	skip := false
	for _, line := range strings.Split(s, "\n") {
		t := strings.TrimSpace(line)
		switch t {
		case "-- sqlite-only":
			skip = d != dialectSQLite
			continue
		case "-- postgres-only":
			skip = d != dialectPostgres
			continue
		}
		if !skip {
			b.WriteString(line)
			b.WriteByte('\n')
		} else if !strings.HasPrefix(t, "--") && strings.HasSuffix(t, ";") {
			skip = false
		}
	}
	return b.String()
}

// splitStatements splits on semicolons at line ends, dropping comments.
func splitStatements(s string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(s, "\n") {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "--") {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(t, ";") {
			out = append(out, cur.String())
			cur.Reset()
		}
	}
	if strings.TrimSpace(cur.String()) != "" {
		out = append(out, cur.String())
	}
	return out
}
