package storage

import (
	"context"
	"database/sql"
	"encoding/binary"
	"math"
	"strconv"
	"strings"
	"unicode"

	"github.com/tidwall/gjson"
)

// Full-text search: server-side search of room events (spec: Client-Server
// API, "Server Side Search") and the user directory.
//
// SQLite: an FTS4 virtual table. mattn/go-sqlite3 compiles FTS5 in only
// with the sqlite_fts5 build tag, and `go run ./cmd/repeater` and
// `go test ./...` must work without tags; FTS3/FTS4 (with the enhanced
// query syntax, SQLITE_ENABLE_FTS3_PARENTHESIS) is always compiled in.
// FTS4 has no built-in ranking, so results are ranked in Go with BM25
// computed from matchinfo(…, 'pcnalx'). The unicode61 tokenizer splits on
// anything that is not a letter or digit, folds case and strips diacritics.
//
// PostgreSQL: a tsvector per event with a GIN index, queried with
// to_tsquery and ranked with ts_rank. The 'simple' configuration is used
// rather than 'english': Matrix rooms are multilingual, and English
// stemming and stop words would make other languages search worse (and
// make the two dialects disagree). Text is normalised in Go first
// (searchNormalize) so that PostgreSQL's parser sees plain words, as
// unicode61 does: "example.com" or "foo—bar" are two words in both.
//
// Query syntax (both dialects, parsed in Go): words match as prefixes of
// words ("mart" finds "martians"), all must match; "quoted phrases" match
// exactly, in order; OR between two terms matches either; -word excludes.

// SearchKeyTypes maps the spec's search keys to the event type they search.
var SearchKeyTypes = map[string]string{
	"content.body":  "m.room.message",
	"content.name":  "m.room.name",
	"content.topic": "m.room.topic",
}

// maxSearchAtoms bounds the terms of one query.
const maxSearchAtoms = 16

// SearchText returns the text of e that search indexes ("" if none):
// content.body of m.room.message, content.name of m.room.name, and of
// m.room.topic content.topic and the text/plain bodies of content.m.topic.
func SearchText(e *Event) string {
	var s string
	content := gjson.GetBytes(e.JSON, "content")
	switch e.Type {
	case "m.room.message":
		if b := content.Get("body"); b.Type == gjson.String {
			s = b.Str
		}
	case "m.room.name":
		if n := content.Get("name"); n.Type == gjson.String && e.StateKey != nil && *e.StateKey == "" {
			s = n.Str
		}
	case "m.room.topic":
		if e.StateKey == nil || *e.StateKey != "" {
			return ""
		}
		var parts []string
		if t := content.Get("topic"); t.Type == gjson.String && t.Str != "" {
			parts = append(parts, t.Str)
		}
		content.Get(`m\.topic.m\.text`).ForEach(func(_, v gjson.Result) bool {
			mt := v.Get("mimetype").Str
			if b := v.Get("body"); b.Type == gjson.String && (mt == "" || mt == "text/plain") && b.Str != "" {
				dup := false
				for _, p := range parts {
					dup = dup || p == b.Str
				}
				if !dup {
					parts = append(parts, b.Str)
				}
			}
			return true
		})
		s = strings.Join(parts, "\n")
	}
	if s == "" {
		return ""
	}
	// PostgreSQL text cannot hold NUL or invalid UTF-8.
	return strings.ReplaceAll(strings.ToValidUTF8(s, " "), "\x00", " ")
}

func isWordRune(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r) }

// SearchWords splits s into lower-cased words: runs of letters, digits and
// combining marks.
func SearchWords(s string) []string {
	return strings.FieldsFunc(strings.ToLower(s), func(r rune) bool { return !isWordRune(r) })
}

// searchNormalize is s as lower-cased words separated by spaces.
func searchNormalize(s string) string { return strings.Join(SearchWords(s), " ") }

// indexSearch adds e's text to the search index. The caller has checked
// that e is accepted and not an outlier. replace: e may be indexed already.
func (tx *Tx) indexSearch(ctx context.Context, e *Event, replace bool) error {
	if _, ok := searchableType[e.Type]; !ok || e.RedactedBy != "" {
		return nil
	}
	text := SearchText(e)
	if text == "" {
		return nil
	}
	if tx.db.dialect == dialectPostgres {
		_, err := tx.ExecContext(ctx, `INSERT INTO event_search (event_nid, vector) VALUES ($1, to_tsvector('simple', $2)) ON CONFLICT (event_nid) DO NOTHING`,
			e.NID, searchNormalize(text))
		return err
	}
	if replace {
		if _, err := tx.ExecContext(ctx, `DELETE FROM event_search WHERE docid = $1`, e.NID); err != nil {
			return err
		}
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO event_search (docid, body) VALUES ($1, $2)`, e.NID, text)
	return err
}

var searchableType = map[string]struct{}{"m.room.message": {}, "m.room.name": {}, "m.room.topic": {}}

// unindexSearch removes a redacted event from the search index.
func (tx *Tx) unindexSearch(ctx context.Context, eventID string) error {
	col := "docid"
	if tx.db.dialect == dialectPostgres {
		col = "event_nid"
	}
	_, err := tx.ExecContext(ctx, `DELETE FROM event_search WHERE `+col+` = (SELECT stream_pos FROM events WHERE event_id = $1)`, eventID)
	return err
}

// SearchQuery is a parsed search term: clauses that must all match, each
// one or more alternatives, and terms that must not match.
type SearchQuery struct {
	clauses [][]searchAtom
	not     []searchAtom
}

// searchAtom is a word or a phrase (consecutive words).
type searchAtom struct {
	words  []string
	prefix bool // the last word matches as a prefix
}

// ParseSearchTerm parses a client's search term (see the package comment
// above for the syntax). Terms without letters or digits are dropped.
func ParseSearchTerm(term string) *SearchQuery {
	q := &SearchQuery{}
	rs := []rune(term)
	pendingOr := false
	n := 0
	for i := 0; i < len(rs) && n < maxSearchAtoms; {
		if unicode.IsSpace(rs[i]) {
			i++
			continue
		}
		neg := false
		if rs[i] == '-' && i+1 < len(rs) && !unicode.IsSpace(rs[i+1]) {
			neg = true
			i++
		}
		var a searchAtom
		if rs[i] == '"' {
			j := i + 1
			for j < len(rs) && rs[j] != '"' {
				j++
			}
			a.words = SearchWords(string(rs[i+1 : j]))
			i = j + 1
		} else {
			j := i
			for j < len(rs) && !unicode.IsSpace(rs[j]) && rs[j] != '"' {
				j++
			}
			tok := string(rs[i:j])
			i = j
			if tok == "OR" && !neg {
				pendingOr = len(q.clauses) > 0
				continue
			}
			a.words, a.prefix = SearchWords(tok), !neg
		}
		if len(a.words) == 0 {
			continue
		}
		n++
		switch {
		case neg:
			q.not = append(q.not, a)
		case pendingOr:
			last := len(q.clauses) - 1
			q.clauses[last] = append(q.clauses[last], a)
		default:
			q.clauses = append(q.clauses, []searchAtom{a})
		}
		pendingOr = false
	}
	return q
}

// ParseDirectoryTerm parses a user directory search: every word must be a
// prefix of a word of the user's localpart or display name. A term that
// is a user ID ("@alice:example.org") searches for its localpart.
func ParseDirectoryTerm(term string) *SearchQuery {
	if strings.HasPrefix(term, "@") {
		if i := strings.IndexByte(term, ':'); i > 0 {
			term = term[:i]
		}
	}
	q := &SearchQuery{}
	for _, w := range SearchWords(term) {
		if len(q.clauses) == maxSearchAtoms {
			break
		}
		q.clauses = append(q.clauses, []searchAtom{{words: []string{w}, prefix: true}})
	}
	return q
}

// Empty reports whether the query can match nothing.
func (q *SearchQuery) Empty() bool { return len(q.clauses) == 0 }

// ftsMatch renders the query for an FTS4 MATCH (enhanced query syntax).
func (q *SearchQuery) ftsMatch() string {
	atom := func(a searchAtom) string {
		s := `"` + strings.Join(a.words, " ")
		if a.prefix {
			s += "*"
		}
		return s + `"`
	}
	var b strings.Builder
	b.WriteByte('(')
	for i, c := range q.clauses {
		if i > 0 {
			b.WriteString(" AND ")
		}
		if len(c) == 1 {
			b.WriteString(atom(c[0]))
			continue
		}
		b.WriteByte('(')
		for j, a := range c {
			if j > 0 {
				b.WriteString(" OR ")
			}
			b.WriteString(atom(a))
		}
		b.WriteByte(')')
	}
	b.WriteByte(')')
	for _, a := range q.not {
		b.WriteString(" NOT " + atom(a))
	}
	return b.String()
}

// tsQuery renders the query for PostgreSQL's to_tsquery. Words hold only
// letters, digits and marks, so they need no escaping.
func (q *SearchQuery) tsQuery() string {
	atom := func(a searchAtom) string {
		parts := make([]string, len(a.words))
		for i, w := range a.words {
			parts[i] = "'" + w + "'"
		}
		if a.prefix {
			parts[len(parts)-1] += ":*"
		}
		return "(" + strings.Join(parts, " <-> ") + ")"
	}
	var cl []string
	for _, c := range q.clauses {
		alts := make([]string, len(c))
		for i, a := range c {
			alts[i] = atom(a)
		}
		cl = append(cl, "("+strings.Join(alts, " | ")+")")
	}
	for _, a := range q.not {
		cl = append(cl, "!"+atom(a))
	}
	return strings.Join(cl, " & ")
}

// Highlights returns the words a client should highlight in results: the
// query's words, and the words of texts that a prefix term matched.
func (q *SearchQuery) Highlights(texts []string) []string {
	seen := map[string]bool{}
	out := []string{}
	add := func(w string) {
		if !seen[w] {
			seen[w] = true
			out = append(out, w)
		}
	}
	var prefixes []string
	for _, c := range q.clauses {
		for _, a := range c {
			for _, w := range a.words {
				add(w)
			}
			if a.prefix {
				prefixes = append(prefixes, a.words[len(a.words)-1])
			}
		}
	}
	for _, t := range texts {
		for _, w := range SearchWords(t) {
			for _, p := range prefixes {
				if strings.HasPrefix(w, p) {
					add(w)
					break
				}
			}
		}
	}
	return out
}

// bm25 ranks an FTS4 row from its matchinfo(…, 'pcnalx') blob: the sum
// over the query's phrases of their BM25 weight (k1 = 1.2, b = 0.75).
func bm25(mi []byte) float64 {
	const k1, b = 1.2, 0.75
	u := func(i int) float64 { return float64(binary.NativeEndian.Uint32(mi[4*i:])) }
	if len(mi) < 12 {
		return 0
	}
	p, c := int(u(0)), int(u(1))
	if len(mi) < 4*(3+2*c+3*p*c) {
		return 0
	}
	n := u(2)
	score := 0.0
	for i := 0; i < p; i++ {
		for col := 0; col < c; col++ {
			x := 3 + 2*c + 3*(i*c+col)
			tf, df := u(x), u(x+2)
			if tf == 0 {
				continue
			}
			avg, dl := max(u(3+col), 1), u(3+c+col)
			idf := math.Log(1 + (n-df+0.5)/(df+0.5))
			score += idf * tf * (k1 + 1) / (tf + k1*(1-b+b*dl/avg))
		}
	}
	return score
}

// EventSearch asks for the events matching Query that UserID may search:
// in rooms they are or were a member of (join, leave or ban; not
// forgotten), accepted, not outliers, not redacted. History visibility is
// the caller's to check.
type EventSearch struct {
	Query      *SearchQuery
	UserID     string
	Types      []string // event types to search; none: no results
	Rooms      []string // only these rooms (nil: any)
	NotRooms   []string
	Senders    []string // only these senders (nil: any)
	NotSenders []string
	Before     int64 // only events with NID < Before (0: no bound)
	Limit      int   // at most this many hits, newest first
}

// SearchHit is one matching event.
type SearchHit struct {
	NID    int64
	Rank   float64 // higher is a better match
	RoomID string
	Sender string
}

// SearchEvents returns up to s.Limit matching events, newest first.
func (db *DB) SearchEvents(ctx context.Context, s EventSearch) ([]SearchHit, error) {
	if s.Query == nil || s.Query.Empty() || len(s.Types) == 0 || s.Limit <= 0 {
		return nil, nil
	}
	query, args := db.searchSQL(s, false)
	rows, err := db.R().QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []SearchHit
	for rows.Next() {
		var h SearchHit
		if db.dialect == dialectPostgres {
			err = rows.Scan(&h.NID, &h.RoomID, &h.Sender, &h.Rank)
		} else {
			var mi []byte
			err = rows.Scan(&h.NID, &h.RoomID, &h.Sender, &mi)
			h.Rank = bm25(mi)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, rows.Err()
}

// CountSearchEvents counts the events SearchEvents would find with no
// Before bound and no limit.
func (db *DB) CountSearchEvents(ctx context.Context, s EventSearch) (int, error) {
	if s.Query == nil || s.Query.Empty() || len(s.Types) == 0 {
		return 0, nil
	}
	query, args := db.searchSQL(s, true)
	var n int
	err := db.R().QueryRowContext(ctx, query, args...).Scan(&n)
	return n, err
}

func (db *DB) searchSQL(s EventSearch, count bool) (string, []any) {
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	var b strings.Builder
	nid := "event_search.docid"
	if db.dialect == dialectPostgres {
		nid = "s.event_nid"
		m := arg(s.Query.tsQuery())
		if count {
			b.WriteString(`SELECT COUNT(*)`)
		} else {
			b.WriteString(`SELECT s.event_nid, e.room_id, e.sender, ts_rank(s.vector, q)`)
		}
		b.WriteString(` FROM to_tsquery('simple', ` + m + `) q, event_search s JOIN events e ON e.stream_pos = s.event_nid WHERE s.vector @@ q`)
	} else {
		m := arg(s.Query.ftsMatch())
		if count {
			b.WriteString(`SELECT COUNT(*)`)
		} else {
			b.WriteString(`SELECT event_search.docid, e.room_id, e.sender, matchinfo(event_search, 'pcnalx')`)
		}
		// An FTS table cannot be aliased (MATCH and matchinfo need its
		// name). CROSS JOIN keeps it the outer loop: with events outside,
		// SQLite would run the whole full-text query once per event row.
		b.WriteString(` FROM event_search CROSS JOIN events e ON e.stream_pos = event_search.docid WHERE event_search MATCH ` + m)
	}
	b.WriteString(` AND e.rejected = 0 AND e.outlier = 0 AND e.redacted_by IS NULL`)
	u := arg(s.UserID)
	b.WriteString(` AND e.room_id IN (SELECT room_id FROM current_state WHERE type = 'm.room.member' AND state_key = ` + u +
		` AND membership IN ('join', 'leave', 'ban'))`)
	b.WriteString(` AND e.room_id NOT IN (SELECT room_id FROM room_forgotten WHERE localpart = ` + arg(localpartOf(s.UserID)) + `)`)
	in := func(col string, vals []string, not bool) {
		if vals == nil || (not && len(vals) == 0) {
			return
		}
		if len(vals) == 0 {
			b.WriteString(` AND 1 = 0`)
			return
		}
		b.WriteString(` AND ` + col)
		if not {
			b.WriteString(` NOT`)
		}
		b.WriteString(` IN (`)
		for i, v := range vals {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(arg(v))
		}
		b.WriteByte(')')
	}
	in("e.type", s.Types, false)
	in("e.room_id", s.Rooms, false)
	in("e.room_id", s.NotRooms, true)
	in("e.sender", s.Senders, false)
	in("e.sender", s.NotSenders, true)
	if count {
		return b.String(), args
	}
	if s.Before != 0 {
		b.WriteString(` AND ` + nid + ` < ` + arg(s.Before))
	}
	b.WriteString(` ORDER BY ` + nid + ` DESC LIMIT ` + arg(s.Limit))
	return b.String(), args
}

// localpartOf returns the localpart of a user ID.
func localpartOf(userID string) string {
	s := strings.TrimPrefix(userID, "@")
	if i := strings.IndexByte(s, ':'); i >= 0 {
		return s[:i]
	}
	return s
}

// User directory.

// noteDirectoryState keeps the user directory's tables up to date with a
// change of a room's current state (called by SetCurrentState): a user's
// join gives their directory entry its display name and avatar; join
// rules and history visibility decide whether the room is public.
func (tx *Tx) noteDirectoryState(ctx context.Context, roomID string, k StateKey, nid int64, membership string) error {
	isMember := k.Type == "m.room.member" && membership == "join"
	isRule := k.StateKey == "" && (k.Type == "m.room.join_rules" || k.Type == "m.room.history_visibility")
	if !isMember && !isRule {
		return nil
	}
	var js string
	if err := tx.QueryRowContext(ctx, `SELECT json FROM events WHERE stream_pos = $1`, nid).Scan(&js); err != nil {
		if err == sql.ErrNoRows {
			return nil
		}
		return err
	}
	content := gjson.Get(js, "content")
	str := func(key string) string {
		if v := content.Get(key); v.Type == gjson.String {
			return strings.ReplaceAll(strings.ToValidUTF8(v.Str, ""), "\x00", "")
		}
		return ""
	}
	switch k.Type {
	case "m.room.join_rules":
		_, err := tx.ExecContext(ctx, `INSERT INTO room_publicity (room_id, join_rule) VALUES ($1, $2)
			ON CONFLICT (room_id) DO UPDATE SET join_rule = excluded.join_rule`, roomID, str("join_rule"))
		return err
	case "m.room.history_visibility":
		_, err := tx.ExecContext(ctx, `INSERT INTO room_publicity (room_id, history_visibility) VALUES ($1, $2)
			ON CONFLICT (room_id) DO UPDATE SET history_visibility = excluded.history_visibility`, roomID, str("history_visibility"))
		return err
	}
	return tx.setDirectoryUser(ctx, k.StateKey, str("displayname"), str("avatar_url"))
}

// setDirectoryUser records a user's display name and avatar.
func (tx *Tx) setDirectoryUser(ctx context.Context, userID, name, avatar string) error {
	var id int64
	var oldName, oldAvatar sql.NullString
	err := tx.QueryRowContext(ctx, `SELECT id, display_name, avatar_url FROM user_directory WHERE user_id = $1`, userID).Scan(&id, &oldName, &oldAvatar)
	found := err == nil
	if err != nil && err != sql.ErrNoRows {
		return err
	}
	if found && oldName.String == name && oldAvatar.String == avatar {
		return nil
	}
	words := searchNormalize(localpartOf(userID) + " " + name)
	if tx.db.dialect == dialectPostgres {
		_, err := tx.ExecContext(ctx, `INSERT INTO user_directory (user_id, display_name, avatar_url, words) VALUES ($1, $2, $3, to_tsvector('simple', $4))
			ON CONFLICT (user_id) DO UPDATE SET display_name = excluded.display_name, avatar_url = excluded.avatar_url, words = excluded.words`,
			userID, nullStr(name), nullStr(avatar), words)
		return err
	}
	if found {
		if _, err := tx.ExecContext(ctx, `UPDATE user_directory SET display_name = $1, avatar_url = $2 WHERE id = $3`, nullStr(name), nullStr(avatar), id); err != nil {
			return err
		}
		if oldName.String == name {
			return nil
		}
		_, err := tx.ExecContext(ctx, `UPDATE user_directory_search SET words = $1 WHERE docid = $2`, words, id)
		return err
	}
	if err := tx.QueryRowContext(ctx, `INSERT INTO user_directory (user_id, display_name, avatar_url) VALUES ($1, $2, $3) RETURNING id`,
		userID, nullStr(name), nullStr(avatar)).Scan(&id); err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO user_directory_search (docid, words) VALUES ($1, $2)`, id, words)
	return err
}

// DirectoryUser is one user directory result.
type DirectoryUser struct {
	UserID      string
	DisplayName string
	AvatarURL   string
}

// SearchUserDirectory returns up to limit users matching q whom searcher
// may find (spec: "User directory"): users who share a joined room with
// the searcher, and users joined to a public room (join rule public or
// history world readable) that a user of serverName is still joined to.
// The searcher finds themself only through a public room. Users sharing a
// room come first. more reports whether there were more matches.
func (db *DB) SearchUserDirectory(ctx context.Context, searcher, serverName string, q *SearchQuery, limit int) (users []DirectoryUser, more bool, err error) {
	if q == nil || q.Empty() || limit <= 0 {
		return nil, false, nil
	}
	var from string
	var match any
	if db.dialect == dialectPostgres {
		from, match = `FROM user_directory d, to_tsquery('simple', $1) q WHERE d.words @@ q`, q.tsQuery()
	} else {
		from, match = `FROM user_directory_search CROSS JOIN user_directory d ON d.id = user_directory_search.docid WHERE user_directory_search MATCH $1`, q.ftsMatch()
	}
	local := "%:" + EscapeLike(serverName)
	rows, err := db.R().QueryContext(ctx, `SELECT user_id, display_name, avatar_url FROM (
		SELECT d.user_id, d.display_name, d.avatar_url,
		CASE WHEN d.user_id <> $2 AND EXISTS (SELECT 1 FROM current_state m WHERE m.type = 'm.room.member' AND m.state_key = d.user_id AND m.membership = 'join'
			AND m.room_id IN (SELECT room_id FROM current_state WHERE type = 'm.room.member' AND state_key = $2 AND membership = 'join')) THEN 1 ELSE 0 END AS shared,
		CASE WHEN EXISTS (SELECT 1 FROM current_state m JOIN room_publicity p ON p.room_id = m.room_id
			WHERE m.type = 'm.room.member' AND m.state_key = d.user_id AND m.membership = 'join'
			AND (p.join_rule = 'public' OR p.history_visibility = 'world_readable')
			AND (d.user_id LIKE $3 ESCAPE '\' OR EXISTS (SELECT 1 FROM current_state l WHERE l.room_id = m.room_id AND l.type = 'm.room.member'
				AND l.membership = 'join' AND l.state_key LIKE $3 ESCAPE '\'))) THEN 1 ELSE 0 END AS pub
		`+from+`
	) c WHERE shared = 1 OR pub = 1 ORDER BY shared DESC, user_id LIMIT $4`, match, searcher, local, limit+1)
	if err != nil {
		return nil, false, err
	}
	defer rows.Close()
	for rows.Next() {
		var u DirectoryUser
		var name, avatar sql.NullString
		if err := rows.Scan(&u.UserID, &name, &avatar); err != nil {
			return nil, false, err
		}
		u.DisplayName, u.AvatarURL = name.String, avatar.String
		users = append(users, u)
	}
	if err := rows.Err(); err != nil {
		return nil, false, err
	}
	if len(users) > limit {
		return users[:limit], true, nil
	}
	return users, false, nil
}
