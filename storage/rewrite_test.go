package storage

import "testing"

func TestRewriteForSQLite(t *testing.T) {
	cases := map[string]string{
		`SELECT $1, $2`:                    `SELECT ?1, ?2`,
		`WHERE a = $2 AND b = $1`:          `WHERE a = ?2 AND b = ?1`,
		`SELECT '$1' FROM t WHERE x = $10`: `SELECT '$1' FROM t WHERE x = ?10`,
		`SELECT 'it''s $3', $3`:            `SELECT 'it''s $3', ?3`,
	}
	for in, want := range cases {
		if got := rewriteForSQLite(in); got != want {
			t.Errorf("rewrite(%q) = %q, want %q", in, got, want)
		}
	}
}
