// Command repeater is the Repeater Matrix homeserver.
//
//	repeater                      run from ./repeater.yaml (created on first run)
//	repeater --config FILE        run from FILE
//	repeater generate-config ...  write a config, signing key and (optionally) TLS pair
//	repeater create-account ...   create a user account (--admin: a server admin)
//	repeater set-admin ...        grant or remove admin rights
//	repeater users ...            list, deactivate, reset-password, devices
//	repeater rooms ...            list, delete
//	repeater server-notice ...    send a server notice to a user or everyone
//	repeater purge-history ...    delete a room's old messages
//	repeater mesh-service         the service line to advertise on an AREDN node
//	repeater version
//
// The administration commands (admin.go) work on the config's database
// with the admin API's code; see --help on each.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"repeater/internal/auth"
	"repeater/internal/config"
	"repeater/storage"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		switch args[0] {
		case "generate-config":
			return cmdGenerateConfig(args[1:], stdout, stderr)
		case "create-account":
			return cmdCreateAccount(args[1:], stdout, stderr)
		case "set-admin":
			return cmdSetAdmin(args[1:], stdout, stderr)
		case "users":
			return cmdUsers(args[1:], stdout, stderr)
		case "rooms":
			return cmdRooms(args[1:], stdout, stderr)
		case "server-notice":
			return cmdServerNotice(args[1:], stdout, stderr)
		case "purge-history":
			return cmdPurgeHistory(args[1:], stdout, stderr)
		case "mesh-service":
			return cmdMeshService(args[1:], stdout, stderr)
		case "version":
			fmt.Fprintln(stdout, "repeater", version)
			return 0
		case "run":
			args = args[1:]
		default:
			fmt.Fprintf(stderr, "repeater: unknown command %q (want run, generate-config, create-account, set-admin, users, rooms, server-notice, purge-history, mesh-service or version)\n", args[0])
			return 2
		}
	}
	return cmdRun(args, stderr)
}

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func cmdGenerateConfig(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("generate-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o config.GenerateOptions
	var asFiles stringList
	fs.StringVar(&o.Dir, "dir", ".", "directory to write repeater.yaml, signing.key (and tls.crt/tls.key) into")
	fs.StringVar(&o.ServerName, "server-name", "localhost:8008", "the server name in user and room IDs")
	fs.StringVar(&o.Database, "database", "", "SQLite path (default repeater.db in --dir) or postgres:// URL")
	fs.StringVar(&o.Listen, "listen", ":8008", "plain-HTTP listen address (client and federation)")
	fs.StringVar(&o.TLSListen, "tls-listen", "", "HTTPS listen address (a self-signed pair is generated if none exists)")
	fs.BoolVar(&o.OpenRegistration, "open-registration", false, "let anyone register")
	fs.StringVar(&o.SharedSecret, "registration-shared-secret", "", "enable shared-secret registration with this secret")
	fs.BoolVar(&o.TestNetwork, "test-network", false, "for sytest and local test networks: open registration, guests, no rate limits, cheap password hashing, a self-signed TLS pair (served with --tls-listen), peers' certificates not verified, private peers allowed")
	fs.Var(&asFiles, "app-service-config", "application service registration file (repeatable)")
	fs.BoolVar(&o.Part97, "part97", false, "an amateur-radio mesh node (FCC Part 97): no TLS or encryption, callsign user names, mesh peers (needs --callsign; see docs/MESH.md)")
	fs.StringVar(&o.Callsign, "callsign", "", "the station's callsign (with --part97)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	serverNameSet := false
	fs.Visit(func(f *flag.Flag) { serverNameSet = serverNameSet || f.Name == "server-name" })
	if o.Part97 {
		if err := checkCallsignFlag(o.Callsign); err != nil {
			fmt.Fprintln(stderr, "repeater: generate-config:", err)
			return 2
		}
		if !serverNameSet {
			o.ServerName = "" // the host's *.local.mesh name
		}
	}
	o.AppServiceFiles = asFiles
	path, err := config.Generate(o)
	if err != nil {
		fmt.Fprintln(stderr, "repeater: generate-config:", err)
		return 1
	}
	fmt.Fprintln(stdout, "wrote", path)
	return 0
}

func cmdCreateAccount(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("create-account", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "repeater.yaml", "config file")
	user := fs.String("username", "", "localpart of the new user")
	pass := fs.String("password", "", "password")
	admin := fs.Bool("admin", false, "make the user a server admin")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *user == "" || *pass == "" {
		fmt.Fprintln(stderr, "repeater: create-account needs --username and --password")
		return 2
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "repeater:", err)
		return 1
	}
	ctx := context.Background()
	db, err := storage.Open(ctx, cfg.DatabaseDSN())
	if err != nil {
		fmt.Fprintln(stderr, "repeater:", err)
		return 1
	}
	defer db.Close()
	hash, err := auth.HashPassword(*pass, cfg.BcryptCost)
	if err != nil {
		fmt.Fprintln(stderr, "repeater:", err)
		return 1
	}
	lp := strings.ToLower(*user)
	if err := db.CreateAccount(ctx, storage.Account{Localpart: lp, PasswordHash: hash, IsAdmin: *admin, DisplayName: lp}); err != nil {
		if errors.Is(err, storage.ErrConflict) {
			fmt.Fprintf(stderr, "repeater: user %q already exists\n", lp)
		} else {
			fmt.Fprintln(stderr, "repeater:", err)
		}
		return 1
	}
	fmt.Fprintf(stdout, "created @%s:%s\n", lp, cfg.ServerName)
	return 0
}

func cmdRun(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("repeater", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "config file (default ./repeater.yaml, generated with data in ./repeater-data/ if absent)")
	serverName := fs.String("server-name", "", "server name when generating the default config")
	mesh := fs.Bool("part97", false, "on first run, make an amateur-radio mesh node (FCC Part 97; needs --callsign; see docs/MESH.md)")
	callsign := fs.String("callsign", "", "the station's callsign (with --part97)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *mesh {
		if err := checkCallsignFlag(*callsign); err != nil {
			fmt.Fprintln(stderr, "repeater:", err)
			return 2
		}
	}
	path := *cfgPath
	if path == "" {
		path = "repeater.yaml"
		if _, err := os.Stat(path); os.IsNotExist(err) {
			if err := firstRun(path, *serverName, *mesh, *callsign, stderr); err != nil {
				fmt.Fprintln(stderr, "repeater:", err)
				return 1
			}
		}
	}
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintln(stderr, "repeater:", err)
		return 1
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "repeater: %s has problems:\n", path)
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintln(stderr, "  -", line)
		}
		return 1
	}
	log := newLogger(cfg.LogLevel, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	srv, err := newServer(ctx, cfg, log)
	if err != nil {
		log.Error("startup failed", "err", err)
		return 1
	}
	if err := srv.listen(); err != nil {
		log.Error("listen failed", "err", err)
		srv.shutdown(context.Background())
		return 1
	}
	log.Info("repeater ready", "server_name", cfg.ServerName, "version", version, "startup", time.Since(start).Round(time.Millisecond))
	// Start-up garbage (migrations, route compilation, caches warming)
	// would otherwise stay mapped until the runtime's scavenger gets to
	// it: hand it back at once, which matters on small machines.
	go func() {
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
			debug.FreeOSMemory()
		}
	}()
	<-ctx.Done()
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.shutdown(sctx); err != nil {
		log.Error("shutdown", "err", err)
		return 1
	}
	return 0
}

// firstRun writes ./repeater.yaml pointing at a new ./repeater-data/.
func firstRun(path, serverName string, mesh bool, callsign string, stderr io.Writer) error {
	dir := "repeater-data"
	if serverName == "" && !mesh {
		serverName = "localhost:8008"
	}
	gen, err := config.Generate(config.GenerateOptions{Dir: dir, ServerName: serverName, Listen: ":8008", Part97: mesh, Callsign: callsign})
	if err != nil {
		return err
	}
	b, err := os.ReadFile(gen)
	if err != nil {
		return err
	}
	cfg := config.Defaults()
	if err := yamlUnmarshal(b, cfg); err != nil {
		return err
	}
	cfg.SigningKeyPath = filepath.Join(dir, cfg.SigningKeyPath)
	cfg.Database = filepath.Join(dir, "repeater.db")
	out, err := cfg.Marshal()
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append([]byte("# Generated on first run. Options: see config.yaml.example.\n"), out...), 0o600); err != nil {
		return err
	}
	os.Remove(gen)
	fmt.Fprintf(stderr, "repeater: first run: wrote %s and %s/ (server name %s)\n", path, dir, cfg.ServerName)
	if mesh {
		fmt.Fprintf(stderr, "repeater: amateur-radio mesh node for %s; advertise it on your AREDN node: repeater mesh-service\n", cfg.Part97.Callsign)
	}
	return nil
}

func newLogger(level string, w io.Writer) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lv}))
	// gomatrixserverlib logs through logrus; send it to the same place.
	logrus.SetOutput(w)
	if lv > slog.LevelDebug {
		logrus.SetLevel(logrus.WarnLevel)
	}
	return log
}
