package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// client is a minimal Matrix Client-Server API client for load generation.
type client struct {
	base string // e.g. http://127.0.0.1:8008
	http *http.Client
}

// user is a registered account.
type user struct {
	ID    string
	Token string
}

// httpError is returned for non-2xx responses.
type httpError struct {
	Method, Path string
	Status       int
	Body         string
}

func (e *httpError) Error() string {
	b := e.Body
	if len(b) > 300 {
		b = b[:300] + "..."
	}
	return fmt.Sprintf("%s %s: HTTP %d: %s", e.Method, e.Path, e.Status, b)
}

func newClient(base string, maxConns int) *client {
	tr := &http.Transport{
		Proxy:               nil, // loopback only: never go through a proxy
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        maxConns,
		MaxIdleConnsPerHost: maxConns,
		IdleConnTimeout:     90 * time.Second,
	}
	return &client{
		base: strings.TrimRight(base, "/"),
		// Long-poll syncs use timeout=30000, so allow well over 30 s.
		http: &http.Client{Transport: tr, Timeout: 60 * time.Second},
	}
}

// checkLoopback refuses any base URL whose host is not a loopback address.
func checkLoopback(base string) error {
	u, err := url.Parse(base)
	if err != nil {
		return err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("url %q: scheme must be http or https", base)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("url %q: host must be a loopback address (127.0.0.0/8, ::1, localhost)", base)
	}
	return nil
}

// do performs one request. body may be nil; out may be nil. A non-2xx
// status yields *httpError (with the body), and the raw body is returned.
func (c *client) do(ctx context.Context, method, path, token string, body any, out any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		p := path
		if i := strings.IndexByte(p, '?'); i >= 0 {
			p = p[:i]
		}
		return raw, &httpError{Method: method, Path: p, Status: resp.StatusCode, Body: string(raw)}
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return raw, fmt.Errorf("%s %s: decoding response: %w", method, path, err)
		}
	}
	return raw, nil
}

type registerResp struct {
	UserID      string `json:"user_id"`
	AccessToken string `json:"access_token"`
	Session     string `json:"session"`
}

// register creates an account with the m.login.dummy flow. If the server
// answers the first round with 401 and a UIA session, it repeats the
// request with that session.
func (c *client) register(ctx context.Context, username, password string) (user, error) {
	req := map[string]any{
		"username": username,
		"password": password,
		"auth":     map[string]any{"type": "m.login.dummy"},
	}
	var r registerResp
	raw, err := c.do(ctx, "POST", "/_matrix/client/v3/register", "", req, &r)
	if he, ok := err.(*httpError); ok && he.Status == 401 {
		var uia registerResp
		if json.Unmarshal(raw, &uia) != nil || uia.Session == "" {
			return user{}, err
		}
		req["auth"] = map[string]any{"type": "m.login.dummy", "session": uia.Session}
		r = registerResp{}
		_, err = c.do(ctx, "POST", "/_matrix/client/v3/register", "", req, &r)
	}
	if err != nil {
		return user{}, err
	}
	if r.AccessToken == "" {
		return user{}, fmt.Errorf("register %s: no access_token in response", username)
	}
	return user{ID: r.UserID, Token: r.AccessToken}, nil
}

// registerShared uses the Synapse-style shared-secret admin registration.
func (c *client) registerShared(ctx context.Context, secret, username, password string) (user, error) {
	var n struct {
		Nonce string `json:"nonce"`
	}
	if _, err := c.do(ctx, "GET", "/_synapse/admin/v1/register", "", nil, &n); err != nil {
		return user{}, err
	}
	req := map[string]any{
		"nonce":    n.Nonce,
		"username": username,
		"password": password,
		"admin":    false,
		"mac":      sharedSecretMAC(secret, n.Nonce, username, password),
	}
	var r registerResp
	if _, err := c.do(ctx, "POST", "/_synapse/admin/v1/register", "", req, &r); err != nil {
		return user{}, err
	}
	return user{ID: r.UserID, Token: r.AccessToken}, nil
}

// sharedSecretMAC is hex(HMAC-SHA1(secret, nonce\0user\0password\0notadmin)).
func sharedSecretMAC(secret, nonce, username, password string) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(nonce + "\x00" + username + "\x00" + password + "\x00notadmin"))
	return hex.EncodeToString(m.Sum(nil))
}

func (c *client) createRoom(ctx context.Context, u user, name string) (string, error) {
	var r struct {
		RoomID string `json:"room_id"`
	}
	body := map[string]any{"preset": "public_chat", "name": name}
	if _, err := c.do(ctx, "POST", "/_matrix/client/v3/createRoom", u.Token, body, &r); err != nil {
		return "", err
	}
	return r.RoomID, nil
}

func (c *client) join(ctx context.Context, u user, roomID string) error {
	_, err := c.do(ctx, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/join", u.Token, map[string]any{}, nil)
	return err
}

// sendText sends an m.room.message with the given body and returns the event ID.
func (c *client) sendText(ctx context.Context, u user, roomID, txn, text string) (string, error) {
	var r struct {
		EventID string `json:"event_id"`
	}
	path := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/send/m.room.message/" + url.PathEscape(txn)
	_, err := c.do(ctx, "PUT", path, u.Token, map[string]any{"msgtype": "m.text", "body": text}, &r)
	return r.EventID, err
}

// getEvent fetches one event with GET /rooms/{id}/event/{eventId}.
func (c *client) getEvent(ctx context.Context, u user, roomID, eventID string) error {
	_, err := c.do(ctx, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/event/"+url.PathEscape(eventID), u.Token, nil, nil)
	return err
}

// clientEvent is the subset of an event the scenarios look at.
type clientEvent struct {
	EventID string `json:"event_id"`
	Type    string `json:"type"`
	Sender  string `json:"sender"`
	Content struct {
		Body string `json:"body"`
	} `json:"content"`
}

type syncResp struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Events    []clientEvent `json:"events"`
				Limited   bool          `json:"limited"`
				PrevBatch string        `json:"prev_batch"`
			} `json:"timeline"`
		} `json:"join"`
	} `json:"rooms"`
}

// sync calls GET /sync. since may be empty (initial sync); filter is an
// inline JSON filter or empty; timeoutMS < 0 omits the timeout parameter.
func (c *client) sync(ctx context.Context, u user, since, filter string, timeoutMS int) (*syncResp, int, error) {
	q := url.Values{}
	if since != "" {
		q.Set("since", since)
	}
	if filter != "" {
		q.Set("filter", filter)
	}
	if timeoutMS >= 0 {
		q.Set("timeout", fmt.Sprint(timeoutMS))
	}
	var r syncResp
	raw, err := c.do(ctx, "GET", "/_matrix/client/v3/sync?"+q.Encode(), u.Token, nil, &r)
	return &r, len(raw), err
}

type messagesResp struct {
	Chunk []clientEvent `json:"chunk"`
	Start string        `json:"start"`
	End   string        `json:"end"`
}

// messages calls GET /rooms/{id}/messages?dir=b. An empty from is omitted.
func (c *client) messages(ctx context.Context, u user, roomID, from string, limit int) (*messagesResp, error) {
	q := url.Values{}
	q.Set("dir", "b")
	q.Set("limit", fmt.Sprint(limit))
	if from != "" {
		q.Set("from", from)
	}
	var r messagesResp
	_, err := c.do(ctx, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?"+q.Encode(), u.Token, nil, &r)
	return &r, err
}
