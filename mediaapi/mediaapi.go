// Package mediaapi is the media repository (spec: Client-Server API
// "Content repository", Server-Server API "Content Repository"): uploads,
// downloads and thumbnails on /_matrix/media/* and the authenticated
// /_matrix/client/v1/media/*, our media served to other servers, and other
// servers' media fetched over federation and cached.
//
// File bytes are kept on disk, content-addressed by SHA-256 (identical
// uploads share one file); the database holds what points at them.
package mediaapi

import (
	"context"
	"log/slog"
	"net/http"
	"regexp"
	"runtime"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"repeater/internal/auth"
	"repeater/internal/config"
	"repeater/internal/httputil"
	"repeater/internal/lru"
	"repeater/storage"
)

// Federation carries mediaapi's requests to other servers (the federation
// API implements it).
type Federation interface {
	// MediaGet sends GET path (with its query) to a server: X-Matrix signed
	// when signed. Redirects are not followed.
	MediaGet(ctx context.Context, server, path string, signed bool) (*http.Response, error)
	// MediaGetURL fetches a URL a server redirected a download to, under
	// the federation's address restrictions. Redirects are not followed.
	MediaGetURL(ctx context.Context, url string) (*http.Response, error)
}

// ServerAuth authenticates a federation request (X-Matrix) and runs h with
// the requesting server's name, or answers the error itself.
type ServerAuth func(h func(w http.ResponseWriter, r *http.Request, origin string)) http.Handler

// Deps are what the media API is built from.
type Deps struct {
	Config *config.Config
	DB     *storage.DB
	// Federation fetches remote media; nil: local media only.
	Federation Federation
	Log        *slog.Logger
}

// API is the media repository.
type API struct {
	serverName string
	db         *storage.DB
	fed        Federation
	log        *slog.Logger
	store      *fileStore
	limiter    *httputil.Limiter

	maxUpload int64
	preview   *previewer
	quota     storage.MediaQuota
	cacheSize int64

	// thumbSem bounds concurrent thumbnailing (decoding a large image takes
	// memory and CPU: this may be a Raspberry Pi).
	thumbSem chan struct{}
	// fetches and thumbs coalesce concurrent fetches of one remote file
	// and concurrent generation of one thumbnail.
	fetches flightGroup
	thumbs  flightGroup
	// probes caches image headers by content hash.
	probes *lru.Cache[string, probed]

	// waiters are requests waiting for an asynchronous upload.
	wmu     sync.Mutex
	waiters map[string]*waiter

	// Background work (remote fetches, thumbnails) outlives the request
	// that started it, not the API.
	baseCtx context.Context
	cancel  context.CancelFunc
	bg      sync.WaitGroup
}

const (
	// maxPendingUploads is how many created but not uploaded media IDs a
	// user may hold (spec: POST /create).
	maxPendingUploads = 20
	// unusedExpiry is how long a created media ID waits for its upload.
	unusedExpiry = 24 * time.Hour
	// maxWait caps timeout_ms for content not yet uploaded.
	maxWait = 60 * time.Second
	// defaultWait is timeout_ms's default (spec: 20 s).
	defaultWait = 20 * time.Second
	// remoteFetchTimeout bounds one fetch of remote media.
	remoteFetchTimeout = 5 * time.Minute
)

// New opens the media store and builds the API.
func New(d Deps) (*API, error) {
	store, err := newFileStore(d.Config.MediaPath())
	if err != nil {
		return nil, err
	}
	cfg := d.Config
	workers := min(2, max(1, runtime.NumCPU()/2))
	ctx, cancel := context.WithCancel(context.Background())
	return &API{
		serverName: cfg.ServerName, db: d.DB, fed: d.Federation, log: d.Log, store: store,
		limiter:   httputil.NewLimiter(cfg.RateLimits.Enabled, cfg.RateLimits.PerSecond, cfg.RateLimits.Burst),
		maxUpload: cfg.Media.MaxUploadSize,
		quota:     storage.MediaQuota{User: cfg.Media.UserQuota, Total: cfg.Media.TotalQuota},
		cacheSize: cfg.Media.RemoteCacheSize,
		thumbSem:  make(chan struct{}, workers),
		preview:   newPreviewer(cfg.Media.URLPreview.Enabled, cfg.Media.URLPreview.AllowPrivate, cfg.Media.URLPreview.SkipTLSVerify),
		waiters:   map[string]*waiter{},
		probes:    lru.New[string, probed](4096),
		baseCtx:   ctx, cancel: cancel,
	}, nil
}

// Close stops background fetches and thumbnailing and waits for them.
func (m *API) Close() {
	m.cancel()
	m.bg.Wait()
}

// Routes registers /_matrix/media/{v3,r0,v1} and /_matrix/client/v1/media
// on the root router.
func (m *API) Routes(root *mux.Router, authn *auth.Authenticator) {
	j := func(h httputil.Handler) http.Handler { return httputil.JSON(m.log, h) }
	for _, v := range []string{"v3", "r0"} {
		p := "/_matrix/media/" + v
		root.Handle(p+"/upload", authn.Require(j(m.upload))).Methods(http.MethodPost)
		root.Handle(p+"/upload/{serverName}/{mediaId}", authn.Require(j(m.uploadTo))).Methods(http.MethodPut)
		// Downloads and thumbnails here are unauthenticated (deprecated
		// in v1.11 in favour of /_matrix/client/v1/media).
		root.Handle(p+"/download/{serverName}/{mediaId}", http.HandlerFunc(m.download(false))).Methods(http.MethodGet, http.MethodHead)
		root.Handle(p+"/download/{serverName}/{mediaId}/{fileName}", http.HandlerFunc(m.download(false))).Methods(http.MethodGet, http.MethodHead)
		root.Handle(p+"/thumbnail/{serverName}/{mediaId}", http.HandlerFunc(m.thumbnail(false))).Methods(http.MethodGet, http.MethodHead)
		root.Handle(p+"/config", authn.AllowGuests(j(m.config))).Methods(http.MethodGet)
		root.Handle(p+"/preview_url", authn.AllowGuests(j(m.previewURL))).Methods(http.MethodGet)
	}
	root.Handle("/_matrix/media/v1/create", authn.Require(j(m.create))).Methods(http.MethodPost)

	c := "/_matrix/client/v1/media"
	root.Handle(c+"/download/{serverName}/{mediaId}", authn.AllowGuests(http.HandlerFunc(m.download(true)))).Methods(http.MethodGet, http.MethodHead)
	root.Handle(c+"/download/{serverName}/{mediaId}/{fileName}", authn.AllowGuests(http.HandlerFunc(m.download(true)))).Methods(http.MethodGet, http.MethodHead)
	root.Handle(c+"/thumbnail/{serverName}/{mediaId}", authn.AllowGuests(http.HandlerFunc(m.thumbnail(true)))).Methods(http.MethodGet, http.MethodHead)
	root.Handle(c+"/config", authn.AllowGuests(j(m.config))).Methods(http.MethodGet)
	root.Handle(c+"/preview_url", authn.AllowGuests(j(m.previewURL))).Methods(http.MethodGet)
}

// FederationRoutes registers /_matrix/federation/v1/media/{download,
// thumbnail} behind the federation's request authentication.
func (m *API) FederationRoutes(root *mux.Router, authn ServerAuth) {
	f := "/_matrix/federation/v1/media"
	root.Handle(f+"/download/{mediaId}", authn(m.federationDownload)).Methods(http.MethodGet)
	root.Handle(f+"/thumbnail/{mediaId}", authn(m.federationThumbnail)).Methods(http.MethodGet)
}

// config handles GET config (spec: "m.upload.size").
func (m *API) config(r *http.Request) (any, error) {
	return map[string]any{"m.upload.size": m.maxUpload}, nil
}

var mediaIDRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,255}$`)

// validMediaID: the spec allows only A-Za-z0-9, '_' and '-' (which keeps
// IDs from ever reaching a file path).
func validMediaID(id string) bool { return mediaIDRE.MatchString(id) }

func validServerName(s string) bool {
	_, _, ok := spec.ParseAndValidateServerName(spec.ServerName(s))
	return ok && len(s) <= 255
}

// newMediaID returns a random media ID (143 bits).
func newMediaID() string {
	return auth.RandomString(24, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
}

func nowMS() int64 { return time.Now().UnixMilli() }

// errTooLarge is 413 M_TOO_LARGE for uploads over the limit.
func errTooLarge(limit int64) error {
	return httputil.Err(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "Content is larger than the limit of "+formatBytes(limit))
}

// errNotYetUploaded is 504 M_NOT_YET_UPLOADED (spec: POST /create).
var errNotYetUploaded = httputil.Err(http.StatusGatewayTimeout, "M_NOT_YET_UPLOADED", "Content has not yet been uploaded")

func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return itoa(n) + " bytes"
	}
	div, exp := int64(unit), 0
	for x := n / unit; x >= unit && exp < 4; x /= unit {
		div *= unit
		exp++
	}
	whole := n / div
	frac := (n % div) * 10 / div
	s := itoa(whole)
	if frac != 0 {
		s += "." + itoa(frac)
	}
	return s + " " + string("KMGTP"[exp]) + "iB"
}
