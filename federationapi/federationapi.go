// Package federationapi is the Server-Server API: /_matrix/federation/*
// and /_matrix/key/*. It authenticates requests (X-Matrix), serves and
// fetches signing keys, takes events from other servers into the
// roomserver after checking their signatures, answers the join, state and
// history endpoints, and delivers our events to other servers through a
// queue kept in the database.
package federationapi

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"repeater/internal/config"
	"repeater/internal/httputil"
	"repeater/internal/part97"
	"repeater/roomserver"
	"repeater/storage"
)

// EDUReceiver takes ephemeral events from other servers (typing, receipts,
// presence) into the sync streams.
type EDUReceiver interface {
	RemoteTyping(roomID, userID string, typing bool, timeout time.Duration)
	RemoteReceipt(roomID, receiptType, userID, eventID string, data []byte)
	RemotePresence(userID, presence, statusMsg string, lastActiveAgo int64, currentlyActive bool)
	// PresenceOf is a local user's current presence content.
	PresenceOf(userID string) map[string]any
	// RemoteToDevice delivers a to-device message for a local device ("*":
	// all of the user's devices).
	RemoteToDevice(sender, evType, userID, deviceID string, content []byte)
	// RemoteDeviceListChanged records that a remote user's devices changed.
	RemoteDeviceListChanged(userID string)
}

// API is the federation API and sender.
type API struct {
	cfg        *config.Config
	serverName spec.ServerName
	keyID      gomatrixserverlib.KeyID
	privateKey ed25519.PrivateKey
	publicKey  ed25519.PublicKey
	oldKeys    map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey
	db         *storage.DB
	rs         *roomserver.Server
	edus       EDUReceiver
	log        *slog.Logger
	version    string

	client  fclient.FederationClient
	tr      *transport
	keyRing *gomatrixserverlib.KeyRing
	// verifier checks signatures on events and requests: the key ring, or
	// (the amateur-radio mode's seam) a verifier wrapping it that trusts
	// configured mesh peers without signatures.
	verifier gomatrixserverlib.JSONVerifier
	policy   *part97.Policy
	Sender   *Sender
	bf       backfillState
	runCtx   context.Context // for background work (full backfill)
	dl       deviceLists     // remote device lists (devicelists.go)
	// replicaPoke asks the mesh room keeper for a round now (replica.go).
	replicaPoke chan struct{}
	// pending are events held for another try (replica.go): room -> ID.
	pendingMu sync.Mutex
	pending   map[string]map[string]pendingPDU
	told      map[string]string // server|room -> the tips last sent there
}

// Deps are what the federation API is built from.
type Deps struct {
	Config     *config.Config
	KeyID      gomatrixserverlib.KeyID
	PrivateKey ed25519.PrivateKey
	DB         *storage.DB
	Log        *slog.Logger
	Version    string // ours, for /version
	// Verifier, if set, wraps the key ring as the signature checker.
	Verifier func(keyRing gomatrixserverlib.JSONVerifier) gomatrixserverlib.JSONVerifier
	// Policy is the amateur-radio mode (nil: off): plain-HTTP peers only,
	// unsigned events and requests from trusted peers, and (with its
	// unsigned option) none signed by us.
	Policy *part97.Policy
}

// New builds the federation client, key ring and sender. The roomserver and
// EDU receiver are attached with Attach (the roomserver needs the sender
// first, to queue events).
func New(d Deps) (*API, error) {
	// gomatrixserverlib logs through logrus; keep its chatter out of ours.
	logrus.SetOutput(io.Discard)
	fc := d.Config.Federation
	tr, err := newTransport(fc.Peers, fc.SkipTLSVerify, fc.AllowPrivatePeers, fc.AllowNetworks, fc.DenyNetworks)
	if err != nil {
		return nil, err
	}
	name := spec.ServerName(d.Config.ServerName)
	tr.mesh, tr.meshDNS, tr.unsigned, tr.origin = d.Policy.On(), d.Config.Part97.MeshDNS, d.Policy.Unsigned(), string(name)
	if tr.mesh {
		tr.plain.DialContext = idleDialer(&net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}, meshIdle)
	}
	// On a mesh a slow link may take minutes over a large answer: the
	// transport cuts a connection only when nothing moves on it
	// (meshIdle), not after a fixed time.
	overall := 60 * time.Second
	if d.Policy.On() {
		overall = meshSlack * overall
	}
	client := fclient.NewFederationClient(
		[]*fclient.SigningIdentity{{ServerName: name, KeyID: d.KeyID, PrivateKey: d.PrivateKey}},
		fclient.WithTransport(tr), fclient.WithTimeout(overall))
	a := &API{cfg: d.Config, serverName: name, tr: tr, replicaPoke: make(chan struct{}, 1), keyID: d.KeyID, privateKey: d.PrivateKey,
		publicKey: d.PrivateKey.Public().(ed25519.PublicKey), db: d.DB, log: d.Log, client: client, version: d.Version}
	fetchers := []gomatrixserverlib.KeyFetcher{&gomatrixserverlib.DirectKeyFetcher{
		Client:            client,
		IsLocalServerName: func(s spec.ServerName) bool { return s == name },
		LocalPublicKey:    spec.Base64Bytes(a.publicKey),
	}}
	for _, n := range d.Config.Federation.Notaries {
		keys := map[gomatrixserverlib.KeyID]ed25519.PublicKey{}
		for id, k := range n.Keys {
			if b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(k, "=")); err == nil && len(b) == ed25519.PublicKeySize {
				keys[gomatrixserverlib.KeyID(id)] = b
			}
		}
		fetchers = append(fetchers, &gomatrixserverlib.PerspectiveKeyFetcher{
			PerspectiveServerName: spec.ServerName(n.ServerName), PerspectiveServerKeys: keys, Client: client})
	}
	a.keyRing = &gomatrixserverlib.KeyRing{KeyDatabase: keyDB{db: d.DB, mem: &sync.Map{}}, KeyFetchers: fetchers}
	a.verifier = a.keyRing
	if d.Verifier != nil {
		a.verifier = d.Verifier(a.keyRing)
	}
	a.policy = d.Policy
	if d.Policy.On() {
		a.verifier = meshVerifier{next: a.verifier, policy: d.Policy}
	}
	a.oldKeys = map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey{}
	for _, k := range d.Config.Federation.OldVerifyKeys {
		if b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(k.PublicKey, "=")); err == nil {
			a.oldKeys[gomatrixserverlib.KeyID(k.KeyID)] = gomatrixserverlib.OldVerifyKey{
				VerifyKey: gomatrixserverlib.VerifyKey{Key: b}, ExpiredTS: spec.Timestamp(k.ExpiredTS)}
		}
	}
	a.Sender = newSender(a)
	return a, nil
}

// AddPeer maps a server name to a base URL, as federation.peers does (for
// peers discovered on a mesh), and retries what is queued for it now.
func (a *API) AddPeer(name, baseURL string) error {
	if err := a.tr.AddPeer(name, baseURL); err != nil {
		return err
	}
	a.Sender.wake(name)
	a.pokeReplicas()
	return nil
}

// Attach connects the roomserver and the EDU receiver.
func (a *API) Attach(rs *roomserver.Server, edus EDUReceiver) {
	a.rs, a.edus = rs, edus
}

// Run delivers queued events until ctx ends.
func (a *API) Run(ctx context.Context) {
	a.Sender.mu.Lock()
	a.runCtx = ctx
	a.Sender.mu.Unlock()
	a.Sender.run(ctx)
	a.stopDeviceLists()
}

// isLocal reports whether a server name is ours.
func (a *API) isLocal(s spec.ServerName) bool { return s == a.serverName }

// maxRequestBody caps inbound federation bodies (a transaction holds at
// most 50 PDUs and 100 EDUs of at most 64 KiB each).
const maxRequestBody = 16 << 20

// fedHandler is a handler of an authenticated federation request.
type fedHandler func(r *http.Request, origin spec.ServerName, body []byte) (any, error)

// authed verifies the request (verifyRequest) and runs h with the origin
// and body.
func (a *API) authed(h fedHandler) http.Handler {
	return httputil.JSON(a.log, func(r *http.Request) (any, error) {
		vr, origin, body, err := a.verifyRequest(r)
		if err != nil {
			return nil, err
		}
		// Traffic from a server is a sign it is back: retry its queue now.
		a.Sender.wake(string(origin))
		return h(vr, origin, body)
	})
}
