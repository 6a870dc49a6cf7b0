package storage

import (
	"database/sql"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
)

func TestOnlyDialect(t *testing.T) {
	in := strings.Join([]string{
		"CREATE TABLE a (x INTEGER);",
		"-- sqlite-only",
		"CREATE VIRTUAL TABLE s USING fts4(body);",
		"-- postgres-only",
		"-- a comment inside the marked statement;",
		"CREATE TABLE s (",
		"    v TSVECTOR",
		");",
		"INSERT INTO a VALUES (1);",
	}, "\n")
	got := map[dialect][]string{}
	for _, d := range []dialect{dialectSQLite, dialectPostgres} {
		got[d] = splitStatements(onlyDialect(in, d))
	}
	want := map[dialect][]string{
		dialectSQLite:   {"CREATE TABLE a (x INTEGER);\n", "CREATE VIRTUAL TABLE s USING fts4(body);\n", "INSERT INTO a VALUES (1);\n"},
		dialectPostgres: {"CREATE TABLE a (x INTEGER);\n", "CREATE TABLE s (\n    v TSVECTOR\n);\n", "INSERT INTO a VALUES (1);\n"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
}

func TestParseSearchTerm(t *testing.T) {
	cases := []struct{ term, fts, ts string }{
		{`Martians`, `("martians*")`, `(('martians':*))`},
		{`martians and men`, `("martians*" AND "and*" AND "men*")`, `(('martians':*)) & (('and':*)) & (('men':*))`},
		{`"from mars" -venus`, `("from mars") NOT "venus"`, `(('from' <-> 'mars')) & !('venus')`},
		{`cats OR dogs mice`, `(("cats*" OR "dogs*") AND "mice*")`, `(('cats':*) | ('dogs':*)) & (('mice':*))`},
		{`example.com`, `("example com*")`, `(('example' <-> 'com':*))`},
		{`OR "" -- !!! or`, `("or*")`, `(('or':*))`},
		{`Ünïcode ÉCLAIR`, `("ünïcode*" AND "éclair*")`, `(('ünïcode':*)) & (('éclair':*))`},
		{`it's "unterminated phrase`, `("it s*" AND "unterminated phrase")`, `(('it' <-> 's':*)) & (('unterminated' <-> 'phrase'))`},
	}
	for _, c := range cases {
		q := ParseSearchTerm(c.term)
		if got := q.ftsMatch(); got != c.fts {
			t.Errorf("fts(%q) = %s, want %s", c.term, got, c.fts)
		}
		if got := q.tsQuery(); got != c.ts {
			t.Errorf("ts(%q) = %s, want %s", c.term, got, c.ts)
		}
	}
	for _, term := range []string{"", "   ", "!!! ???", "-alone", "OR"} {
		if q := ParseSearchTerm(term); !q.Empty() {
			t.Errorf("%q: not empty: %+v", term, q)
		}
	}
	if q := ParseSearchTerm(strings.Repeat("word ", 100)); len(q.clauses) != maxSearchAtoms {
		t.Errorf("%d clauses, want at most %d", len(q.clauses), maxSearchAtoms)
	}
	if got := ParseDirectoryTerm("@Alice.Smith:example.org").tsQuery(); got != `(('alice':*)) & (('smith':*))` {
		t.Errorf("directory term: %s", got)
	}
	h := ParseSearchTerm(`mart "red planet"`).Highlights([]string{"Martians on the red planet", "the mart is closed"})
	sort.Strings(h)
	if want := []string{"mart", "martians", "planet", "red"}; !reflect.DeepEqual(h, want) {
		t.Errorf("highlights %v, want %v", h, want)
	}
}

// TestFTS4Queries runs rendered queries against a real FTS4 table in the
// SQLite this binary links, and checks BM25 ranks more hits higher.
func TestFTS4Queries(t *testing.T) {
	db, err := sql.Open("sqlite3", filepath.Join(t.TempDir(), "fts.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE VIRTUAL TABLE s USING fts4(body, tokenize=unicode61)`); err != nil {
		t.Fatalf("FTS4 is not available: %v", err)
	}
	docs := map[int64]string{
		-5: "Men from Mars, martians all",
		1:  "martian martian martian",
		2:  "a single martian in a long sentence with many other words in it",
		3:  "cats and dogs",
		4:  "Café at example.com",
		5:  "mice and dogs",
	}
	for id, body := range docs {
		if _, err := db.Exec(`INSERT INTO s (docid, body) VALUES (?, ?)`, id, body); err != nil {
			t.Fatal(err)
		}
	}
	search := func(term string) []int64 {
		rows, err := db.Query(`SELECT docid, matchinfo(s, 'pcnalx') FROM s WHERE s MATCH ?`, ParseSearchTerm(term).ftsMatch())
		if err != nil {
			t.Fatalf("%q: %v", term, err)
		}
		defer rows.Close()
		type hit struct {
			id   int64
			rank float64
		}
		var hits []hit
		for rows.Next() {
			var h hit
			var mi []byte
			if err := rows.Scan(&h.id, &mi); err != nil {
				t.Fatal(err)
			}
			h.rank = bm25(mi)
			if h.rank <= 0 {
				t.Errorf("%q: doc %d rank %v", term, h.id, h.rank)
			}
			hits = append(hits, h)
		}
		sort.Slice(hits, func(i, j int) bool { return hits[i].rank > hits[j].rank })
		out := []int64{}
		for _, h := range hits {
			out = append(out, h.id)
		}
		return out
	}
	cases := map[string][]int64{
		`martian`:            {1, -5, 2},
		`"men from"`:         {-5},
		`"from men"`:         {},
		`martian -mars`:      {1, 2},
		`cats OR mice`:       nil, // either order
		`dogs -"cats and"`:   {5},
		`cafe`:               {4},
		`example.com`:        {4},
		`MARTIANS all`:       {-5},
		`zebra`:              {},
		`dogs OR zebra mice`: {5},
	}
	for term, want := range cases {
		got := search(term)
		if want == nil {
			sort.Slice(got, func(i, j int) bool { return got[i] < got[j] })
			want = []int64{3, 5}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%q: got %v, want %v", term, got, want)
		}
	}
	// Term frequency: three hits beat one hit in a long row.
	if got := search("martian"); got[0] != 1 {
		t.Errorf("ranking: %v", got)
	}
}
