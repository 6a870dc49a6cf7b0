package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"repeater/federationapi"
	"repeater/internal/aredn"
	"repeater/internal/config"
	"repeater/internal/httputil"
	"repeater/internal/part97"
)

// part97Policy is the amateur-radio mode's policy, nil when it is off.
func part97Policy(cfg *config.Config) (*part97.Policy, error) {
	if !cfg.Part97.Enabled {
		return nil, nil
	}
	return part97.New(part97.Options{Callsign: cfg.Part97.Callsign, RequireCallsign: cfg.Part97.RequireCallsign,
		UnsignedEvents: cfg.Part97.UnsignedEvents, TrustedPeers: cfg.Part97.TrustedPeers})
}

// meshCompression gzips federation traffic (the radio links between
// nodes); client traffic stays on the node's own LAN and is left alone.
func meshCompression(next http.Handler) http.Handler {
	gz := httputil.Gzip(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/_matrix/federation/") || strings.HasPrefix(r.URL.Path, "/_matrix/key/") {
			gz.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// checkCallsignFlag checks --callsign for --part97.
func checkCallsignFlag(cs string) error {
	if cs == "" {
		return fmt.Errorf("--part97 needs --callsign: the station identifies by its callsign (FCC §97.119)")
	}
	if !part97.ValidCallsign(cs) {
		return fmt.Errorf("--callsign %q is not an amateur callsign", cs)
	}
	return nil
}

// cmdMeshService prints the service to advertise on the AREDN node so that
// other nodes find this one (Port Forwarding, DHCP, and Services page:
// Advertised Services).
func cmdMeshService(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mesh-service", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "repeater.yaml", "config file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "repeater:", err)
		return 1
	}
	name := cfg.Part97.ServiceName
	if name == "" {
		name = aredn.DefaultServiceName
	}
	host, _, _ := strings.Cut(cfg.ServerName, ":")
	port := 8008
	if _, p, err := net.SplitHostPort(cfg.Listen); err == nil {
		if n, err := strconv.Atoi(p); err == nil && n > 0 {
			port = n
		}
	}
	line := aredn.ServiceLine(name, host, port)
	fmt.Fprintf(stdout, "%s\n\n", line)
	fmt.Fprintf(stdout, "On the AREDN node (Port Forwarding, DHCP, and Services > Advertised Services):\n"+
		"  name %q, link checked, protocol http, host %s, port %d, path empty.\n"+
		"Other Repeater nodes on the mesh find this one within part97.poll_seconds.\n", name, host, port)
	return 0
}

// meshDiscovery polls the AREDN node for the mesh's Repeater nodes and
// adds each as a federation peer. A node that leaves the list is kept (mesh
// nodes come and go) but no longer polled.
func meshDiscovery(cfg *config.Config, fapi *federationapi.API, log *slog.Logger) *aredn.Poller {
	return &aredn.Poller{
		Node: cfg.Part97.ArednNode, ServiceName: cfg.Part97.ServiceName,
		Interval: time.Duration(cfg.Part97.PollSeconds) * time.Second, Log: log,
		OnPeer: func(name, base string) {
			if name == cfg.ServerName {
				return
			}
			if err := fapi.AddPeer(name, base); err != nil {
				log.Warn("mesh peer not added", "server", name, "url", base, "err", err)
				return
			}
			log.Info("mesh peer found", "server", name, "url", base)
		},
	}
}
