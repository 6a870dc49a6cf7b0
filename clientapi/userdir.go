package clientapi

import (
	"net/http"

	"github.com/tidwall/gjson"

	"repeater/internal/auth"
	"repeater/internal/httputil"
	"repeater/storage"
)

// userDirectorySearch handles POST /user_directory/search (spec: "User
// directory"). Which users a searcher finds follows Synapse's default (and
// what sytest's 52user-directory checks): users sharing a joined room with
// the searcher, and users joined to public rooms (join rule public or
// history world readable) that this server is still in; not every local
// user. Words match prefixes of words of the localpart or display name,
// ignoring case (storage.SearchUserDirectory).
func (a *API) userDirectorySearch(r *http.Request) (any, error) {
	d := auth.FromContext(r.Context())
	body, err := httputil.ReadBody(r, httputil.MaxBody, false)
	if err != nil {
		return nil, err
	}
	term := gjson.GetBytes(body, "search_term")
	if term.Type != gjson.String {
		return nil, httputil.MissingParam("search_term must be a string")
	}
	limit := 10
	if l := gjson.GetBytes(body, "limit"); l.Exists() {
		if l.Type != gjson.Number || l.Num != float64(int64(l.Num)) || l.Num < 0 {
			return nil, httputil.InvalidParam("limit must be a non-negative integer")
		}
		limit = int(min(l.Num, 100))
	}
	users, limited, err := a.db.SearchUserDirectory(r.Context(), d.UserID, a.serverName, storage.ParseDirectoryTerm(term.Str), limit)
	if err != nil {
		return nil, err
	}
	results := make([]map[string]any, 0, len(users))
	for _, u := range users {
		res := map[string]any{"user_id": u.UserID}
		if u.DisplayName != "" {
			res["display_name"] = u.DisplayName
		}
		if u.AvatarURL != "" {
			res["avatar_url"] = u.AvatarURL
		}
		results = append(results, res)
	}
	return map[string]any{"results": results, "limited": limited}, nil
}
