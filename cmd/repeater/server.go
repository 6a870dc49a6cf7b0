package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"repeater/adminapi"
	"repeater/appservice"
	"repeater/clientapi"
	"repeater/federationapi"
	"repeater/internal/auth"
	"repeater/internal/config"
	"repeater/internal/httputil"
	"repeater/mediaapi"
	"repeater/pusher"
	"repeater/roomserver"
	"repeater/storage"
	"repeater/syncapi"
)

// server is a running Repeater: its database, handler and listeners.
type server struct {
	cfg     *config.Config
	log     *slog.Logger
	db      *storage.DB
	handler http.Handler
	cancel  context.CancelFunc
	sync    *syncapi.Sync
	rs      *roomserver.Server
	media   *mediaapi.API
	admin   *adminapi.API
	wg      sync.WaitGroup

	mu        sync.Mutex
	httpSrvs  []*http.Server
	listeners []net.Listener
}

// newServer wires every component, bottom-up, from a validated config.
func newServer(ctx context.Context, cfg *config.Config, log *slog.Logger) (*server, error) {
	key, err := config.LoadSigningKey(cfg.Path(cfg.SigningKeyPath))
	if err != nil {
		return nil, err
	}
	db, err := storage.Open(ctx, cfg.DatabaseDSN())
	if err != nil {
		return nil, err
	}
	startPos, err := db.StreamPos(ctx)
	if err != nil {
		return nil, err
	}
	notifier := syncapi.NewNotifier(startPos)
	policy, err := part97Policy(cfg)
	if err != nil {
		db.Close()
		return nil, err
	}
	services, err := appServices(ctx, cfg, db)
	if err != nil {
		db.Close()
		return nil, err
	}
	asRouter := &appServiceRouter{set: services, db: db, aliasNamespaces: services.HasAliasNamespaces()}
	fapi, err := federationapi.New(federationapi.Deps{Config: cfg, KeyID: key.KeyID, PrivateKey: key.PrivateKey, DB: db, Log: log, Version: version, Policy: policy})
	if err != nil {
		db.Close()
		return nil, err
	}
	// The push worker is woken by the same commits as /sync.
	push := &pusherRef{}
	rs := roomserver.New(roomserver.Config{
		ServerName: spec.ServerName(cfg.ServerName), KeyID: key.KeyID, PrivateKey: key.PrivateKey,
		DefaultVersion: gomatrixserverlib.RoomVersion(cfg.DefaultRoomVersion),
		Outbound:       fapi.Sender,
		Inviter:        fapi,
		Policy:         policy,
		AppServices:    asRouter.orNil(),
	}, db, notifiers{notifier, push, fapi.DeviceListWatcher()}, log)
	push.Worker = pusher.New(db, rs, cfg.ServerName, cfg.Push.SkipTLSVerify, log)
	authn := &auth.Authenticator{ServerName: cfg.ServerName, Log: log, Lookup: func(ctx context.Context, hash string) (string, string, bool, error) {
		d, err := db.DeviceByTokenHash(ctx, hash)
		if err != nil {
			return "", "", false, err
		}
		return d.Localpart, d.DeviceID, d.IsGuest, nil
	}}
	authn.Seen = lastSeen(storage.NewSeenRecorder(db)) // admin.go
	asRouter.pusher = appservice.NewPusher(services, db, rs, cfg.AppServiceSkipTLSVerify, log)
	authn.AppService = func(tok string) auth.AppService {
		as := services.ForToken(tok)
		if as != nil {
			asRouter.pusher.Wake(as.ServiceID()) // a service that speaks is up
		}
		return as
	}
	authn.UserExists = func(ctx context.Context, localpart string) bool {
		acct, err := db.GetAccount(ctx, localpart)
		return err == nil && !acct.Deactivated
	}
	capi := clientapi.New(cfg, db, rs, notifier, fapi, push.Worker, policy, asRouter.pusher, log)
	aapi := adminapi.New(adminapi.Deps{Config: cfg, DB: db, Rooms: rs, Accounts: capi, Notify: notifier, Log: log, Version: version, Federation: true})
	sapi := syncapi.New(db, rs, notifier, cfg.Presence.Enabled, fapi, push.Worker, cfg.ServerName, log)
	fapi.Attach(rs, sapi)
	fetcher, err := federationapi.NewMediaFetcher(fapi)
	if err != nil {
		db.Close()
		return nil, err
	}
	mapi, err := mediaapi.New(mediaapi.Deps{Config: cfg, DB: db, Federation: fetcher, Log: log})
	if err != nil {
		db.Close()
		return nil, err
	}

	root := mux.NewRouter().UseEncodedPath()
	// gorilla/mux tries routes in order, a regular expression each: the
	// client API, which gets nearly all requests, goes first, /sync first
	// within it. One set of routes serves the three prefixes ("unstable"
	// too: some clients and sytest call newer endpoints there); three
	// copies of every route cost megabytes.
	c := root.PathPrefix("/_matrix/client/{clientVersion:v3|r0|unstable}").Subrouter()
	sapi.Routes(c, authn)
	capi.Routes(c, authn)
	aapi.ClientRoutes(c, authn) // /admin/whois
	v1 := root.PathPrefix("/_matrix/client/v1").Subrouter()
	capi.V1Routes(v1, authn)
	asRouter.pusher.V1Routes(v1, authn) // application service ping
	sapi.V1Routes(v1, authn)            // relations, threads
	capi.RootRoutes(root)
	fapi.Routes(root)
	mapi.Routes(root, authn)
	mapi.FederationRoutes(root, fapi.ServerAuth)
	aapi.Routes(root, authn) // /_synapse/admin
	root.NotFoundHandler = httputil.NotFoundHandler(root)
	root.MethodNotAllowedHandler = root.NotFoundHandler

	var handler http.Handler = root
	if policy.On() {
		handler = meshCompression(root)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &server{cfg: cfg, log: log, db: db, cancel: cancel, sync: sapi, rs: rs, media: mapi, admin: aapi,
		handler: httputil.CORS(httputil.Recover(log, handler))}
	s.wg.Add(1)
	go func() { defer s.wg.Done(); sapi.Run(runCtx) }()
	s.wg.Add(1)
	go func() { defer s.wg.Done(); fapi.Run(runCtx) }()
	s.wg.Add(1)
	go func() { defer s.wg.Done(); push.Worker.Run(runCtx) }()
	s.wg.Add(1)
	go func() { defer s.wg.Done(); asRouter.pusher.Run(runCtx) }()
	if policy.On() && len(cfg.Part97.MeshRooms) > 0 {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); fapi.KeepReplicas(runCtx, cfg.Part97.MeshRooms, policy.Callsign+" station") }()
	}
	if policy.On() && cfg.Part97.ArednNode != "" {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); meshDiscovery(cfg, fapi, log).Run(runCtx) }()
	}
	return s, nil
}

// serve starts serving on l (TLS when tlsCfg is set).
func (s *server) serve(l net.Listener, tlsCfg *tls.Config) {
	hs := &http.Server{Handler: s.handler, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 5 * time.Minute,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	if tlsCfg != nil {
		l = tls.NewListener(l, tlsCfg)
	}
	s.mu.Lock()
	s.httpSrvs = append(s.httpSrvs, hs)
	s.listeners = append(s.listeners, l)
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := hs.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("listener stopped", "addr", l.Addr().String(), "err", err)
		}
	}()
}

// listen opens the configured listeners.
func (s *server) listen() error {
	if s.cfg.DebugListen != "" {
		l, err := net.Listen("tcp", s.cfg.DebugListen)
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		s.mu.Lock()
		s.httpSrvs = append(s.httpSrvs, hs)
		s.mu.Unlock()
		go hs.Serve(l)
		s.log.Info("profiler listening", "addr", l.Addr().String())
	}
	if s.cfg.Listen != "" {
		l, err := net.Listen("tcp", s.cfg.Listen)
		if err != nil {
			return err
		}
		s.serve(l, nil)
		s.log.Info("listening", "addr", l.Addr().String(), "tls", false)
	}
	if s.cfg.TLSListen != "" {
		cert, err := tls.LoadX509KeyPair(s.cfg.Path(s.cfg.TLSCert), s.cfg.Path(s.cfg.TLSKey))
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		l, err := net.Listen("tcp", s.cfg.TLSListen)
		if err != nil {
			return err
		}
		s.serve(l, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		s.log.Info("listening", "addr", l.Addr().String(), "tls", true)
	}
	return nil
}

// shutdown drains in-flight requests, stops background work and closes the
// database.
func (s *server) shutdown(ctx context.Context) error {
	s.mu.Lock()
	srvs := s.httpSrvs
	s.mu.Unlock()
	s.sync.Stop()
	var errs []error
	for _, hs := range srvs {
		if err := hs.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	s.cancel()
	s.wg.Wait()
	s.media.Close()
	s.admin.Close()
	errs = append(errs, s.db.Close())
	return errors.Join(errs...)
}

// addrs returns the addresses of the open listeners.
func (s *server) addrs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.listeners))
	for _, l := range s.listeners {
		out = append(out, l.Addr().String())
	}
	return out
}

// notifiers passes the roomserver's commit notices to each listener.
type notifiers []roomserver.Notifier

func (ns notifiers) OnRoomEventPending(roomID string, pos int64, membershipOf string) {
	for _, n := range ns {
		n.OnRoomEventPending(roomID, pos, membershipOf)
	}
}

func (ns notifiers) OnRoomEvent(roomID string, pos int64, users []string) {
	for _, n := range ns {
		n.OnRoomEvent(roomID, pos, users)
	}
}

// pusherRef lets the roomserver's listeners include the push worker, which
// is built after the roomserver it reads from.
type pusherRef struct{ *pusher.Worker }

func (p *pusherRef) OnRoomEventPending(roomID string, pos int64, membershipOf string) {}

func (p *pusherRef) OnRoomEvent(roomID string, pos int64, users []string) {
	if p.Worker != nil {
		p.Worker.OnRoomEvent(roomID, pos, users)
	}
}
