// Package storagetest gives tests a fresh database on every dialect that is
// available: SQLite always, PostgreSQL when TEST_POSTGRES_DSN is set.
package storagetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"
)

// Dialects returns a fresh DSN per available dialect, keyed by name.
func Dialects(t testing.TB) map[string]string {
	t.Helper()
	out := map[string]string{"sqlite": filepath.Join(t.TempDir(), "test.db")}
	if dsn := os.Getenv("TEST_POSTGRES_DSN"); dsn != "" {
		out["postgres"] = FreshPostgres(t, dsn)
	}
	return out
}

// FreshPostgres creates a new, empty database on the server of dsn and drops
// it when the test ends.
func FreshPostgres(t testing.TB, dsn string) string {
	t.Helper()
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	var b [6]byte
	rand.Read(b[:])
	name := "repeater_test_" + hex.EncodeToString(b[:])
	if _, err := admin.ExecContext(context.Background(), "CREATE DATABASE "+name); err != nil {
		admin.Close()
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		admin.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
		admin.Close()
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}
