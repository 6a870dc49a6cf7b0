package main

// Console administration: subcommands that work on the database named by
// the config file, with the same code as the admin API (adminapi), no
// running server needed.
//
//	repeater set-admin --username X [--off]
//	repeater users list [--all] [--name S]
//	repeater users deactivate [--erase] @user:server
//	repeater users reset-password --username X --password Y [--keep-devices]
//	repeater users devices @user:server
//	repeater rooms list [--search S]
//	repeater rooms delete [--purge] [--block] !room:server
//	repeater server-notice (--user @user:server | --all) TEXT
//	repeater purge-history --before DATE [--keep-local] !room:server
//
// Commands that change rooms or end sessions refuse to run while the
// server seems to be running (its listen address is taken): the server
// keeps rooms' heads and access tokens in memory, which a second process
// cannot update. Stop it first, or use the admin API (/_synapse/admin).

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"repeater/adminapi"
	"repeater/clientapi"
	"repeater/internal/auth"
	"repeater/internal/config"
	"repeater/internal/httputil"
	"repeater/roomserver"
	"repeater/storage"
)

// lastSeen returns the access-token check's hook that keeps devices'
// last-seen records (at most one queued write a minute per device).
func lastSeen(rec *storage.SeenRecorder) func(r *http.Request, d *auth.Device) {
	return func(r *http.Request, d *auth.Device) {
		if d.AppServiceID != "" && d.DeviceID == "" {
			return // an application service, not a device
		}
		if rec.Due(d.Localpart, d.DeviceID) {
			host := r.RemoteAddr
			if h, _, err := net.SplitHostPort(host); err == nil {
				host = h
			}
			rec.Record(d.Localpart, d.DeviceID, host, r.UserAgent())
		}
	}
}

// console is what the administration subcommands work with.
type console struct {
	cfg   *config.Config
	db    *storage.DB
	rs    *roomserver.Server
	admin *adminapi.API
	out   io.Writer
}

func (c *console) close() {
	c.admin.Close()
	c.db.Close()
}

// nopOutbound lets the roomserver queue PDUs for other servers (in the
// federation_outbox table) without a federation sender: the server
// delivers them when it next runs.
type nopOutbound struct{}

func (nopOutbound) Queued([]string) {}

// nopNotifier stands in for the sync notifier: nobody long-polls a
// console.
type nopNotifier struct{}

func (nopNotifier) OnUserDataPending(string)  {}
func (nopNotifier) OnUserEvent(string, int64) {}

// openConsole opens the database of the config at path and builds the
// roomserver, client API (for its account operations) and admin API on it.
func openConsole(path string, out, stderr io.Writer) (*console, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	key, err := config.LoadSigningKey(cfg.Path(cfg.SigningKeyPath))
	if err != nil {
		return nil, err
	}
	db, err := storage.Open(context.Background(), cfg.DatabaseDSN())
	if err != nil {
		return nil, err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	rs := roomserver.New(roomserver.Config{
		ServerName: spec.ServerName(cfg.ServerName), KeyID: key.KeyID, PrivateKey: key.PrivateKey,
		DefaultVersion: gomatrixserverlib.RoomVersion(cfg.DefaultRoomVersion), Outbound: nopOutbound{},
	}, db, nil, log)
	policy, err := part97Policy(cfg)
	if err != nil {
		return nil, err
	}
	capi := clientapi.New(cfg, db, rs, nopNotifier{}, nil, nil, policy, nil, log)
	admin := adminapi.New(adminapi.Deps{Config: cfg, DB: db, Rooms: rs, Accounts: capi, Log: log, Version: version})
	return &console{cfg: cfg, db: db, rs: rs, admin: admin, out: out}, nil
}

// serverRunning reports whether the configured listen address is taken
// (most likely by a running Repeater).
func serverRunning(cfg *config.Config) bool {
	for _, addr := range []string{cfg.Listen, cfg.TLSListen} {
		if addr == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "0" {
			continue
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return true
		}
		l.Close()
	}
	return false
}

// parseArgs parses flags that may come before or after the positional
// arguments, and returns the positional ones.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// adminCommand runs one administration subcommand: name is the command
// ("users list"), usage its arguments; body gets the console and the
// positional arguments. When mutating (if set) says so after the flags
// are parsed, the command refuses to run next to a running server unless
// --force.
func adminCommand(name, usage, about string, args []string, stdout, stderr io.Writer, mutating func() bool,
	setup func(fs *flag.FlagSet), nargs func(n int) bool, body func(c *console, pos []string) error) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "repeater.yaml", "config file")
	force := false
	if mutating != nil {
		fs.BoolVar(&force, "force", false, "run even though the server seems to be running (its listen address is taken)")
	}
	if setup != nil {
		setup(fs)
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: repeater %s [flags] %s\n%s\n", name, usage, about)
		fs.PrintDefaults()
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return 2
	}
	if nargs != nil && !nargs(len(pos)) {
		fs.Usage()
		return 2
	}
	c, err := openConsole(*cfgPath, stdout, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "repeater:", err)
		return 1
	}
	defer c.close()
	if mutating != nil && mutating() && !force && serverRunning(c.cfg) {
		fmt.Fprintf(stderr, "repeater: %s: the server seems to be running (%s is taken); stop it first or use the admin API (--force runs anyway)\n", name, c.cfg.Listen)
		return 1
	}
	if err := body(c, pos); err != nil {
		msg := err.Error()
		if e := httputil.AsError(err); e != nil {
			msg = e.Message
		}
		fmt.Fprintf(stderr, "repeater: %s: %s\n", name, msg)
		return 1
	}
	return 0
}

func exactly(n int) func(int) bool { return func(k int) bool { return k == n } }

func always() bool { return true }

// userArg turns a localpart or user ID into a user ID on this server.
func (c *console) userArg(s string) string {
	if strings.HasPrefix(s, "@") {
		return s
	}
	return "@" + strings.ToLower(s) + ":" + c.cfg.ServerName
}

func cmdSetAdmin(args []string, stdout, stderr io.Writer) int {
	var user string
	var off bool
	return adminCommand("set-admin", "", "Grant (or with --off remove) server admin rights.", args, stdout, stderr, nil,
		func(fs *flag.FlagSet) {
			fs.StringVar(&user, "username", "", "localpart or user ID")
			fs.BoolVar(&off, "off", false, "remove admin rights instead")
		}, exactly(0), func(c *console, _ []string) error {
			if user == "" {
				return errors.New("--username is required")
			}
			uid := c.userArg(user)
			lp, _, _ := strings.Cut(strings.TrimPrefix(uid, "@"), ":")
			if err := c.db.SetAdmin(context.Background(), lp, !off); err != nil {
				if errors.Is(err, storage.ErrNotFound) {
					return fmt.Errorf("no user %s", uid)
				}
				return err
			}
			fmt.Fprintf(c.out, "%s admin: %v\n", uid, !off)
			return nil
		})
}

func cmdUsers(args []string, stdout, stderr io.Writer) int {
	usage := func() int {
		fmt.Fprintln(stderr, "usage: repeater users list|deactivate|reset-password|devices [flags] ... (--help on each)")
		return 2
	}
	if len(args) == 0 {
		return usage()
	}
	ctx := context.Background()
	switch args[0] {
	case "list":
		var all bool
		var name string
		return adminCommand("users list", "", "List local accounts (not deactivated, not guests, unless --all).", args[1:], stdout, stderr, nil,
			func(fs *flag.FlagSet) {
				fs.BoolVar(&all, "all", false, "include deactivated and guest accounts")
				fs.StringVar(&name, "name", "", "only accounts whose localpart or display name contains this")
			}, exactly(0), func(c *console, _ []string) error {
				tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "USER\tADMIN\tDEACTIVATED\tGUEST\tCREATED\tDISPLAY NAME")
				for offset := 0; ; {
					accts, total, err := c.db.ListAccounts(ctx, storage.AccountQuery{Offset: offset, Limit: 500, Name: name, Guests: all, Deactivated: all})
					if err != nil {
						return err
					}
					for _, a := range accts {
						fmt.Fprintf(tw, "@%s:%s\t%v\t%v\t%v\t%s\t%s\n", a.Localpart, c.cfg.ServerName, a.IsAdmin, a.Deactivated, a.IsGuest,
							time.UnixMilli(a.CreatedTS).UTC().Format("2006-01-02 15:04"), a.DisplayName)
					}
					offset += len(accts)
					if len(accts) == 0 || offset >= total {
						break
					}
				}
				return tw.Flush()
			})
	case "deactivate":
		var erase bool
		return adminCommand("users deactivate", "@user:server", "Deactivate an account: it leaves every room, its sessions end, it cannot log in.",
			args[1:], stdout, stderr, always,
			func(fs *flag.FlagSet) { fs.BoolVar(&erase, "erase", false, "also erase the profile") },
			exactly(1), func(c *console, pos []string) error {
				uid := c.userArg(pos[0])
				if err := c.admin.DeactivateUser(ctx, uid, erase); err != nil {
					return err
				}
				fmt.Fprintln(c.out, "deactivated", uid)
				return nil
			})
	case "reset-password":
		var user, pass string
		var keep bool
		// Ending sessions needs the server stopped (it caches access
		// tokens); keeping them does not.
		return adminCommand("users reset-password", "", "Set an account's password and log out its sessions.", args[1:], stdout, stderr,
			func() bool { return !keep },
			func(fs *flag.FlagSet) {
				fs.StringVar(&user, "username", "", "localpart or user ID")
				fs.StringVar(&pass, "password", "", "the new password")
				fs.BoolVar(&keep, "keep-devices", false, "keep the account's sessions")
			}, exactly(0), func(c *console, _ []string) error {
				if user == "" || pass == "" {
					return errors.New("--username and --password are required")
				}
				uid := c.userArg(user)
				if err := c.admin.ResetPassword(ctx, uid, pass, !keep); err != nil {
					return err
				}
				fmt.Fprintln(c.out, "password set for", uid)
				return nil
			})
	case "devices":
		return adminCommand("users devices", "@user:server", "List an account's devices and when they were last seen.", args[1:], stdout, stderr, nil,
			nil, exactly(1), func(c *console, pos []string) error {
				devs, err := c.admin.UserDevices(ctx, c.userArg(pos[0]))
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "DEVICE\tNAME\tLAST SEEN\tIP\tUSER AGENT")
				for _, d := range devs {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.DeviceID, d.DisplayName, time.UnixMilli(d.LastSeenTS).UTC().Format("2006-01-02 15:04"), d.LastSeenIP, d.UserAgent)
				}
				return tw.Flush()
			})
	}
	return usage()
}

func cmdRooms(args []string, stdout, stderr io.Writer) int {
	usage := func() int {
		fmt.Fprintln(stderr, "usage: repeater rooms list|delete [flags] ... (--help on each)")
		return 2
	}
	if len(args) == 0 {
		return usage()
	}
	ctx := context.Background()
	switch args[0] {
	case "list":
		var search string
		return adminCommand("rooms list", "", "List the rooms this server holds, largest first.", args[1:], stdout, stderr, nil,
			func(fs *flag.FlagSet) {
				fs.StringVar(&search, "search", "", "only rooms whose name, alias or ID contains this")
			},
			exactly(0), func(c *console, _ []string) error {
				rooms, err := c.admin.Rooms(ctx, "joined_members", false, search)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ROOM\tMEMBERS\tLOCAL\tVERSION\tPUBLIC\tALIAS\tNAME")
				for _, r := range rooms {
					fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%v\t%s\t%s\n", r.RoomID, r.JoinedMembers, r.JoinedLocalMembers, r.Version, r.Published, r.CanonicalAlias, r.Name)
				}
				return tw.Flush()
			})
	case "delete":
		var purge, block bool
		var msg, newRoomUser string
		return adminCommand("rooms delete", "!room:server",
			"Shut a room down: local users leave, its local aliases and directory entry go; --purge deletes it from the database, --block keeps local users from joining again.",
			args[1:], stdout, stderr, always,
			func(fs *flag.FlagSet) {
				fs.BoolVar(&purge, "purge", false, "delete the room's events and state from the database")
				fs.BoolVar(&block, "block", false, "refuse local users' joins from now on")
				fs.StringVar(&newRoomUser, "new-room-user", "", "local user who makes a room the removed users are moved to")
				fs.StringVar(&msg, "message", "", "message posted in that new room")
			}, exactly(1), func(c *console, pos []string) error {
				req := adminapi.DeleteRoomRequest{Block: block, Purge: &purge, Message: msg}
				if newRoomUser != "" {
					req.NewRoomUserID = c.userArg(newRoomUser)
				}
				res, err := c.admin.DeleteRoom(ctx, pos[0], req, "@"+c.cfg.ServerNotices.SystemUser+":"+c.cfg.ServerName)
				if err != nil {
					return err
				}
				fmt.Fprintf(c.out, "removed %d local users (%d failed), %d aliases", len(res.KickedUsers), len(res.FailedToKickUsers), len(res.LocalAliases))
				if res.NewRoomID != nil {
					fmt.Fprintf(c.out, ", new room %s", *res.NewRoomID)
				}
				fmt.Fprintf(c.out, "; purged: %v, blocked: %v\n", purge, block)
				return nil
			})
	}
	return usage()
}

func cmdServerNotice(args []string, stdout, stderr io.Writer) int {
	var user string
	var all bool
	return adminCommand("server-notice", "TEXT", "Send a server notice to one local user (--user) or every active one (--all).",
		args, stdout, stderr, always,
		func(fs *flag.FlagSet) {
			fs.StringVar(&user, "user", "", "the recipient (localpart or user ID)")
			fs.BoolVar(&all, "all", false, "send to every local account that is not deactivated")
		}, func(n int) bool { return n > 0 }, func(c *console, pos []string) error {
			if (user == "") == !all {
				return errors.New("give either --user or --all")
			}
			ctx := context.Background()
			content := fmt.Appendf(nil, `{"msgtype":"m.text","body":%s}`, strconv.Quote(strings.Join(pos, " ")))
			if !all {
				id, err := c.admin.SendServerNotice(ctx, c.userArg(user), content)
				if err != nil {
					return err
				}
				fmt.Fprintln(c.out, "sent", id)
				return nil
			}
			lps, err := c.db.ActiveLocalparts(ctx)
			if err != nil {
				return err
			}
			sent, failed := 0, 0
			for _, lp := range lps {
				if lp == c.cfg.ServerNotices.SystemUser {
					continue
				}
				if _, err := c.admin.SendServerNotice(ctx, c.userArg(lp), content); err != nil {
					fmt.Fprintf(stderr, "repeater: server-notice: @%s:%s: %v\n", lp, c.cfg.ServerName, err)
					failed++
					continue
				}
				sent++
			}
			fmt.Fprintf(c.out, "sent to %d users (%d failed)\n", sent, failed)
			if failed > 0 {
				return fmt.Errorf("%d notices failed", failed)
			}
			return nil
		})
}

// parseWhen reads a date (2006-01-02, UTC), an RFC 3339 time or Unix
// milliseconds.
func parseWhen(s string) (int64, error) {
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t.UnixMilli(), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UnixMilli(), nil
	}
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		return ms, nil
	}
	return 0, fmt.Errorf("%q is not a date (2006-01-02), an RFC 3339 time or Unix milliseconds", s)
}

func cmdPurgeHistory(args []string, stdout, stderr io.Writer) int {
	var before string
	var keepLocal bool
	return adminCommand("purge-history", "!room:server",
		"Delete a room's messages sent before a date (the latest one before it stays); state (members, names, rules) is kept.",
		args, stdout, stderr, always,
		func(fs *flag.FlagSet) {
			fs.StringVar(&before, "before", "", "date (2006-01-02), RFC 3339 time or Unix milliseconds")
			fs.BoolVar(&keepLocal, "keep-local", false, "keep messages sent by this server's users")
		}, exactly(1), func(c *console, pos []string) error {
			ts, err := parseWhen(before)
			if err != nil {
				return err
			}
			ctx := context.Background()
			depth, err := c.admin.PurgePoint(ctx, pos[0], "", ts)
			if err != nil {
				return err
			}
			n, err := c.admin.PurgeHistory(ctx, pos[0], depth, !keepLocal)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.out, "purged %d events\n", n)
			return nil
		})
}
