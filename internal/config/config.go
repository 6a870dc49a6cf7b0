// Package config is Repeater's configuration: one YAML tree with defaults,
// validation that reports every problem at once, and generation of a new
// config with its signing key (and, for test networks, a TLS pair).
package config

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"gopkg.in/yaml.v3"
)

// Config is the whole server configuration. Relative paths are resolved
// against the directory of the config file.
type Config struct {
	// ServerName is the name in user and room IDs, e.g. example.org.
	ServerName string `yaml:"server_name"`
	// SigningKeyPath holds the ed25519 signing key ("ed25519 <id> <seed>").
	SigningKeyPath string `yaml:"signing_key_path"`
	// Database is a SQLite file path or a postgres:// URL.
	Database string `yaml:"database"`
	// Listen is the plain-HTTP address for client and federation traffic.
	Listen string `yaml:"listen"`
	// TLSListen is the HTTPS address (empty: no TLS listener).
	TLSListen string `yaml:"tls_listen"`
	TLSCert   string `yaml:"tls_cert"`
	TLSKey    string `yaml:"tls_key"`
	// PublicBaseURL is advertised in .well-known/matrix/client.
	PublicBaseURL string `yaml:"public_baseurl"`

	Registration struct {
		// Open allows anyone to register with m.login.dummy.
		Open bool `yaml:"open"`
		// SharedSecret enables /_synapse/admin/v1/register (empty: off).
		SharedSecret string `yaml:"shared_secret"`
		// Guests allows guest accounts (register?kind=guest).
		Guests bool `yaml:"guests"`
	} `yaml:"registration"`

	// BcryptCost is the password hashing cost (4..31).
	BcryptCost int `yaml:"bcrypt_cost"`

	RateLimits struct {
		Enabled bool `yaml:"enabled"`
		// PerSecond and Burst apply per user (or per IP when logged out).
		PerSecond float64 `yaml:"per_second"`
		Burst     int     `yaml:"burst"`
	} `yaml:"rate_limits"`

	// DefaultRoomVersion for new rooms.
	DefaultRoomVersion string `yaml:"default_room_version"`

	Federation struct {
		// SkipTLSVerify disables certificate checks on outbound requests
		// (test networks only).
		SkipTLSVerify bool `yaml:"skip_tls_verify"`
		// AllowPrivatePeers permits loopback and private-range peers.
		AllowPrivatePeers bool `yaml:"allow_private_peers"`
		// AllowNetworks are address ranges (CIDR) that may be reached even
		// though private (e.g. a mesh in 10.0.0.0/8); DenyNetworks are
		// ranges never reached. Deny wins.
		AllowNetworks []string `yaml:"allow_networks"`
		DenyNetworks  []string `yaml:"deny_networks"`
		// Peers maps server names to base URLs (http:// or https://),
		// bypassing .well-known/SRV discovery: static mesh peers and tests.
		Peers map[string]string `yaml:"peers"`
		// Backfill is "on_demand" (history is fetched when a client pages
		// past what is held) or "full" (all of a room's history is fetched
		// in the background right after joining it).
		Backfill string `yaml:"backfill"`
		// Notaries are trusted key servers asked for other servers' keys
		// when a server cannot be asked directly.
		Notaries []Notary `yaml:"notaries"`
		// OldVerifyKeys are this server's previous signing keys (after a
		// rotation), published as old_verify_keys so others can still
		// check events signed with them.
		OldVerifyKeys []OldKey `yaml:"old_verify_keys"`
	} `yaml:"federation"`

	// AutoJoinRooms are rooms (IDs or aliases) every new local account
	// joins on registration.
	AutoJoinRooms []string `yaml:"auto_join_rooms"`

	// Part97 is the amateur-radio mesh mode (FCC Part 97): see Part97.
	Part97 Part97 `yaml:"part97"`

	// AppServiceConfigFiles are application-service registration files.
	AppServiceConfigFiles []string `yaml:"app_service_config_files"`
	// AppServiceSkipTLSVerify does not check application services'
	// certificates (test networks only).
	AppServiceSkipTLSVerify bool `yaml:"app_service_skip_tls_verify"`

	Presence struct {
		Enabled bool `yaml:"enabled"`
	} `yaml:"presence"`

	// Push is delivery to push gateways (HTTP pushers).
	Push struct {
		// SkipTLSVerify disables certificate checks on gateways (test
		// networks only).
		SkipTLSVerify bool `yaml:"skip_tls_verify"`
	} `yaml:"push"`

	// TURN is the relay offered to VoIP clients (GET /voip/turnServer).
	// With SharedSecret, each user gets time-limited credentials (the TURN
	// REST scheme coturn's use-auth-secret checks); otherwise the fixed
	// Username and Password are handed out. No URIs: no TURN server.
	TURN struct {
		URIs         []string `yaml:"uris"`
		SharedSecret string   `yaml:"shared_secret"`
		Username     string   `yaml:"username"`
		Password     string   `yaml:"password"`
		// TTL is how long credentials are valid, in seconds.
		TTL int `yaml:"ttl"`
		// AllowGuests gives guest accounts credentials too.
		AllowGuests bool `yaml:"allow_guests"`
	} `yaml:"turn"`

	// LoginToken lets a signed-in client make a single-use token that logs
	// another client in (POST /_matrix/client/v1/login/get_token, after
	// re-entering the password; m.login.token).
	LoginToken struct {
		Enabled bool `yaml:"enabled"`
	} `yaml:"login_token"`

	// ServerNotices are messages from the administrators to users
	// (Client-Server API, "Server Notices"; the admin API's
	// send_server_notice and `repeater server-notice`): each user gets one
	// room, made by the system user, tagged m.server_notice.
	ServerNotices struct {
		// SystemUser is the sender's localpart (its account is made on first
		// use and cannot log in).
		SystemUser  string `yaml:"system_user"`
		DisplayName string `yaml:"display_name"`
		RoomName    string `yaml:"room_name"`
	} `yaml:"server_notices"`

	Media struct {
		// Path is the directory holding media files (content-addressed by
		// SHA-256). Empty: "media" next to the SQLite database (next to
		// the config file with PostgreSQL).
		Path string `yaml:"path"`
		// MaxUploadSize is the largest upload, and the largest remote
		// file fetched, in bytes.
		MaxUploadSize int64 `yaml:"max_upload_size"`
		// UserQuota caps the bytes each local user may have uploaded;
		// TotalQuota caps all local uploads together. 0: unlimited.
		UserQuota  int64 `yaml:"user_quota"`
		TotalQuota int64 `yaml:"total_quota"`
		// RemoteCacheSize caps the bytes of other servers' media (and
		// their thumbnails) kept; the least recently used go first.
		// 0: unlimited.
		RemoteCacheSize int64 `yaml:"remote_cache_size"`
		// URLPreview lets clients ask the server for link previews
		// (preview_url): the server fetches the page and its image. Off by
		// default: the server would see, and fetch, every link users look
		// at. Private, loopback and link-local addresses are never fetched
		// unless AllowPrivate (test networks).
		URLPreview struct {
			Enabled      bool `yaml:"enabled"`
			AllowPrivate bool `yaml:"allow_private"`
			// SkipTLSVerify does not check sites' certificates (test
			// networks only).
			SkipTLSVerify bool `yaml:"skip_tls_verify"`
		} `yaml:"url_preview"`
	} `yaml:"media"`

	// LogLevel: debug, info, warn or error.
	LogLevel string `yaml:"log_level"`

	// DebugListen serves Go's profiler (/debug/pprof/) on this address when
	// set; keep it on loopback.
	DebugListen string `yaml:"debug_listen"`

	// Dir is the directory relative paths are resolved against.
	Dir string `yaml:"-"`
}

// Defaults returns a config with every default set.
func Defaults() *Config {
	c := &Config{
		ServerName:         "localhost:8008",
		SigningKeyPath:     "signing.key",
		Database:           "repeater.db",
		Listen:             ":8008",
		BcryptCost:         12,
		DefaultRoomVersion: "10",
		LogLevel:           "info",
	}
	c.RateLimits.Enabled = true
	c.RateLimits.PerSecond = 2
	c.RateLimits.Burst = 20
	c.Presence.Enabled = true
	c.TURN.TTL = 86400
	c.TURN.AllowGuests = true
	c.LoginToken.Enabled = true
	c.ServerNotices.SystemUser = "server"
	c.ServerNotices.DisplayName = "Server Notices"
	c.ServerNotices.RoomName = "Server Notices"
	c.Federation.Backfill = "on_demand"
	c.Media.MaxUploadSize = 50 << 20
	c.Media.RemoteCacheSize = 1 << 30
	c.Part97.RequireCallsign = true
	c.Part97.ArednNode = "http://localnode.local.mesh"
	c.Part97.ServiceName = "Matrix"
	c.Part97.PollSeconds = 180
	c.Part97.MeshDNS = true
	return c
}

// Load reads a config file over the defaults.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c := Defaults()
	if err := yaml.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	c.Dir = filepath.Dir(abs)
	return c, nil
}

// Path resolves p against the config's directory.
func (c *Config) Path(p string) string {
	if p == "" || filepath.IsAbs(p) || c.Dir == "" {
		return p
	}
	return filepath.Join(c.Dir, p)
}

// DatabaseDSN is the database to open.
func (c *Config) DatabaseDSN() string {
	if strings.HasPrefix(c.Database, "postgres://") || strings.HasPrefix(c.Database, "postgresql://") {
		return c.Database
	}
	return c.Path(strings.TrimPrefix(c.Database, "file:"))
}

// MediaPath is the media directory.
func (c *Config) MediaPath() string {
	if c.Media.Path != "" {
		return c.Path(c.Media.Path)
	}
	dsn := c.DatabaseDSN()
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		return c.Path("media")
	}
	dsn, _, _ = strings.Cut(dsn, "?")
	return filepath.Join(filepath.Dir(dsn), "media")
}

// Validate reports every problem with the config at once.
func (c *Config) Validate() error {
	var errs []error
	add := func(f string, a ...any) { errs = append(errs, fmt.Errorf(f, a...)) }
	if _, _, ok := spec.ParseAndValidateServerName(spec.ServerName(c.ServerName)); !ok {
		add("server_name %q is not a valid server name", c.ServerName)
	}
	if c.SigningKeyPath == "" {
		add("signing_key_path is required")
	} else if _, err := os.Stat(c.Path(c.SigningKeyPath)); err != nil {
		add("signing_key_path: %v", err)
	}
	if c.Database == "" {
		add("database is required")
	}
	if c.Listen == "" && c.TLSListen == "" {
		add("at least one of listen and tls_listen is required")
	}
	for name, a := range map[string]string{"listen": c.Listen, "tls_listen": c.TLSListen} {
		if a != "" {
			if _, _, err := net.SplitHostPort(a); err != nil {
				add("%s %q: %v", name, a, err)
			}
		}
	}
	if c.TLSListen != "" {
		if c.TLSCert == "" || c.TLSKey == "" {
			add("tls_listen needs tls_cert and tls_key")
		} else {
			for _, p := range []string{c.TLSCert, c.TLSKey} {
				if _, err := os.Stat(c.Path(p)); err != nil {
					add("tls: %v", err)
				}
			}
		}
	}
	if c.BcryptCost < 4 || c.BcryptCost > 31 {
		add("bcrypt_cost %d must be between 4 and 31", c.BcryptCost)
	}
	if c.RateLimits.Enabled && (c.RateLimits.PerSecond <= 0 || c.RateLimits.Burst <= 0) {
		add("rate_limits: per_second and burst must be positive when enabled")
	}
	if b := c.Federation.Backfill; b != "on_demand" && b != "full" {
		add("federation.backfill %q must be on_demand or full", b)
	}
	for _, cidr := range append(append([]string{}, c.Federation.AllowNetworks...), c.Federation.DenyNetworks...) {
		if _, _, err := net.ParseCIDR(cidr); err != nil {
			add("federation: %q is not a CIDR range", cidr)
		}
	}
	for _, n := range c.Federation.Notaries {
		if n.ServerName == "" || len(n.Keys) == 0 {
			add("federation.notaries: each needs server_name and keys")
		}
		for id, k := range n.Keys {
			if b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(k, "=")); err != nil || len(b) != ed25519.PublicKeySize || !strings.HasPrefix(id, "ed25519:") {
				add("federation.notaries: %s: key %s is not an ed25519 public key", n.ServerName, id)
			}
		}
	}
	for _, k := range c.Federation.OldVerifyKeys {
		if b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(k.PublicKey, "=")); err != nil || len(b) != ed25519.PublicKeySize || !strings.HasPrefix(k.KeyID, "ed25519:") || k.ExpiredTS <= 0 {
			add("federation.old_verify_keys: %q needs an ed25519 key_id, public_key and expired_ts", k.KeyID)
		}
	}
	for name, base := range c.Federation.Peers {
		if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
			add("federation.peers: %s: %q must be an http:// or https:// URL", name, base)
		}
	}
	if n, err := strconv.Atoi(c.DefaultRoomVersion); err != nil || n < 1 || n > 12 {
		add("default_room_version %q is not a supported stable room version", c.DefaultRoomVersion)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		add("log_level %q must be debug, info, warn or error", c.LogLevel)
	}
	if c.Media.MaxUploadSize <= 0 {
		add("media.max_upload_size must be positive")
	}
	if c.Media.UserQuota < 0 || c.Media.TotalQuota < 0 || c.Media.RemoteCacheSize < 0 {
		add("media: user_quota, total_quota and remote_cache_size must not be negative")
	}
	for _, u := range c.TURN.URIs {
		if !strings.HasPrefix(u, "turn:") && !strings.HasPrefix(u, "turns:") {
			add("turn.uris: %q must start with turn: or turns:", u)
		}
	}
	if len(c.TURN.URIs) > 0 && c.TURN.TTL <= 0 {
		add("turn.ttl must be a positive number of seconds")
	}
	if c.TURN.SharedSecret != "" && (c.TURN.Username != "" || c.TURN.Password != "") {
		add("turn: set either shared_secret or username and password, not both")
	}
	for _, f := range c.AppServiceConfigFiles {
		if _, err := os.Stat(c.Path(f)); err != nil {
			add("app_service_config_files: %v", err)
		}
	}
	if c.Part97.Enabled {
		c.validatePart97(add)
	}
	if su := c.ServerNotices.SystemUser; su == "" || strings.Trim(su, "abcdefghijklmnopqrstuvwxyz0123456789._=-/+") != "" {
		add("server_notices.system_user %q must be a localpart (a-z, 0-9, ._=-/+)", su)
	}
	return errors.Join(errs...)
}

// Part97 is the amateur-radio mode for meshes such as AREDN and
// Broadband-Hamnet (FCC Part 97: §97.113(a)(4) forbids messages encoded to
// obscure their meaning, §97.119 station identification by callsign,
// §97.219 accountability of forwarding stations). When Enabled: no TLS
// anywhere, no end-to-end encryption, callsign user names, plain-HTTP
// federation with mesh peers (optionally without signatures), peers
// learnt from the AREDN node, and mesh rooms replicated on every node.
// docs/MESH.md is the operator's guide.
type Part97 struct {
	Enabled bool `yaml:"enabled"`
	// Callsign is the station's callsign (it identifies the station;
	// the station account's name and display name).
	Callsign string `yaml:"callsign"`
	// RequireCallsign accepts only callsigns as new user names.
	RequireCallsign bool `yaml:"require_callsign"`
	// UnsignedEvents: events made here carry no signatures and outbound
	// federation requests no X-Matrix header.
	UnsignedEvents bool `yaml:"unsigned_events"`
	// TrustedPeers are server names and address ranges (CIDR, e.g.
	// 10.0.0.0/8) whose unsigned events and requests are accepted.
	TrustedPeers []string `yaml:"trusted_peers"`
	// ArednNode is the AREDN node whose advertised services are polled
	// for peers (empty: no discovery).
	ArednNode string `yaml:"aredn_node"`
	// ServiceName is the advertised service name that marks a peer.
	ServiceName string `yaml:"service_name"`
	// PollSeconds is how often the AREDN node is polled.
	PollSeconds int `yaml:"poll_seconds"`
	// MeshDNS reaches a server name that is no known peer at
	// http://name:8008 through the mesh's DNS; off, only configured and
	// discovered peers are reached.
	MeshDNS bool `yaml:"mesh_dns"`
	// MeshRooms are rooms (aliases or IDs) the station account joins and
	// keeps a full copy of; local users are joined to them on sign-up.
	MeshRooms []string `yaml:"mesh_rooms"`
}

// Notary is a trusted key server (spec: "Querying Keys Through Another
// Server"): its name and its public keys, key ID -> unpadded base64.
type Notary struct {
	ServerName string            `yaml:"server_name"`
	Keys       map[string]string `yaml:"keys"`
}

// OldKey is a retired signing key: ID ("ed25519:..."), public key
// (unpadded base64) and when it stopped being used (ms since the epoch).
type OldKey struct {
	KeyID     string `yaml:"key_id"`
	PublicKey string `yaml:"public_key"`
	ExpiredTS int64  `yaml:"expired_ts"`
}

// SigningKey is the server's ed25519 signing key.
type SigningKey struct {
	KeyID      gomatrixserverlib.KeyID
	PrivateKey ed25519.PrivateKey
}

// LoadSigningKey reads a key file in the "ed25519 <version> <base64 seed>" format.
func LoadSigningKey(path string) (*SigningKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f := strings.Fields(string(b))
	if len(f) != 3 || f[0] != "ed25519" {
		return nil, fmt.Errorf("signing key %s: want \"ed25519 <version> <seed>\"", path)
	}
	seed, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(f[2], "="))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("signing key %s: bad seed", path)
	}
	return &SigningKey{KeyID: gomatrixserverlib.KeyID("ed25519:" + f[1]), PrivateKey: ed25519.NewKeyFromSeed(seed)}, nil
}

// Marshal renders the config as YAML.
func (c *Config) Marshal() ([]byte, error) { return yaml.Marshal(c) }
