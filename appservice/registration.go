// Package appservice is the Application Service API's homeserver side
// (spec: "Application Service API"): registration files, the services'
// namespaces, and their authentication by as_token.
package appservice

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"

	"repeater/internal/auth"
)

// Registration is one application service's registration file, read as
// Synapse reads it (spec: "Registration").
type Registration struct {
	ID string `yaml:"id"`
	// URL is where transactions are pushed; nil (url: null) for a service
	// that only uses the Client-Server API.
	URL             *string `yaml:"url"`
	ASToken         string  `yaml:"as_token"`
	HSToken         string  `yaml:"hs_token"`
	SenderLocalpart string  `yaml:"sender_localpart"`
	Namespaces      struct {
		Users   []Namespace `yaml:"users"`
		Aliases []Namespace `yaml:"aliases"`
		Rooms   []Namespace `yaml:"rooms"`
	} `yaml:"namespaces"`
	// RateLimited: false exempts the service's users from rate limits.
	RateLimited      *bool    `yaml:"rate_limited"`
	Protocols        []string `yaml:"protocols"`
	ReceiveEphemeral bool     `yaml:"receive_ephemeral"`
	// PushEphemeral is the unstable name of ReceiveEphemeral (MSC2409).
	PushEphemeral bool `yaml:"de.sorunome.msc2409.push_ephemeral"`

	serverName string
	file       string
}

// Namespace is one regular expression of a service's users, aliases or
// rooms.
type Namespace struct {
	Exclusive bool   `yaml:"exclusive"`
	Regex     string `yaml:"regex"`
	re        *regexp.Regexp
}

// Set is the configured application services.
type Set struct {
	regs    []*Registration
	byToken map[[32]byte]*Registration
}

// Load reads registration files; the first problem names its file.
func Load(paths []string, serverName string) (*Set, error) {
	s := &Set{byToken: map[[32]byte]*Registration{}}
	ids, hsTokens := map[string]string{}, map[string]string{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("application service %s: %w", p, err)
		}
		var r Registration
		if err := yaml.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("application service %s: %w", p, err)
		}
		r.serverName, r.file = serverName, p
		if err := r.check(); err != nil {
			return nil, fmt.Errorf("application service %s: %w", p, err)
		}
		key := sha256.Sum256([]byte(r.ASToken))
		switch {
		case ids[r.ID] != "":
			return nil, fmt.Errorf("application service %s: id %q is also used by %s", p, r.ID, ids[r.ID])
		case s.byToken[key] != nil:
			return nil, fmt.Errorf("application service %s: as_token is also used by %s", p, s.byToken[key].file)
		case hsTokens[r.HSToken] != "":
			return nil, fmt.Errorf("application service %s: hs_token is also used by %s", p, hsTokens[r.HSToken])
		}
		ids[r.ID], hsTokens[r.HSToken] = p, p
		reg := r
		s.byToken[key] = &reg
		s.regs = append(s.regs, &reg)
	}
	return s, nil
}

func (r *Registration) check() error {
	var errs []error
	if r.ID == "" {
		errs = append(errs, errors.New("id is required"))
	}
	if r.ASToken == "" || r.HSToken == "" {
		errs = append(errs, errors.New("as_token and hs_token are required"))
	}
	if r.SenderLocalpart == "" || strings.Trim(r.SenderLocalpart, "abcdefghijklmnopqrstuvwxyz0123456789._=-/+") != "" {
		errs = append(errs, fmt.Errorf("sender_localpart %q is not a valid localpart", r.SenderLocalpart))
	}
	if r.URL != nil && *r.URL != "" && !strings.HasPrefix(*r.URL, "http://") && !strings.HasPrefix(*r.URL, "https://") {
		errs = append(errs, fmt.Errorf("url %q is not an http(s) URL", *r.URL))
	}
	for kind, nss := range map[string][]Namespace{"users": r.Namespaces.Users, "aliases": r.Namespaces.Aliases, "rooms": r.Namespaces.Rooms} {
		for i := range nss {
			// Anchored at the start, as Synapse matches (re.match).
			re, err := regexp.Compile(`^(?:` + nss[i].Regex + `)`)
			if err != nil || nss[i].Regex == "" {
				errs = append(errs, fmt.Errorf("namespaces.%s: %q is not a regular expression", kind, nss[i].Regex))
				continue
			}
			nss[i].re = re
		}
	}
	return errors.Join(errs...)
}

// Sender is the service's own user ID.
func (r *Registration) Sender() string { return "@" + r.SenderLocalpart + ":" + r.serverName }

// ServiceID is the registration's id.
func (r *Registration) ServiceID() string { return r.ID }

// OwnsUser reports whether the service may act as userID: its sender, or a
// user its namespaces include.
func (r *Registration) OwnsUser(userID string) bool {
	return userID == r.Sender() || matches(r.Namespaces.Users, userID, false)
}

// ExemptFromRateLimits reports whether rate_limited is false.
func (r *Registration) ExemptFromRateLimits() bool { return r.RateLimited != nil && !*r.RateLimited }

func matches(nss []Namespace, s string, exclusiveOnly bool) bool {
	for _, ns := range nss {
		if (!exclusiveOnly || ns.Exclusive) && ns.re != nil && ns.re.MatchString(s) {
			return true
		}
	}
	return false
}

// ByToken returns the service whose as_token this is, or nil. Tokens are
// compared as SHA-256 digests (a map lookup that does not reveal how much
// of a token was right).
func (s *Set) ByToken(tok string) *Registration {
	if s == nil || tok == "" {
		return nil
	}
	return s.byToken[sha256.Sum256([]byte(tok))]
}

// All is every registration.
func (s *Set) All() []*Registration {
	if s == nil {
		return nil
	}
	return s.regs
}

// ExclusiveUser returns the service holding userID in an exclusive
// namespace (or as its sender), or nil.
func (s *Set) ExclusiveUser(userID string) *Registration {
	for _, r := range s.All() {
		if userID == r.Sender() || matches(r.Namespaces.Users, userID, true) {
			return r
		}
	}
	return nil
}

// ExclusiveAlias returns the service holding alias exclusively, or nil.
func (s *Set) ExclusiveAlias(alias string) *Registration {
	for _, r := range s.All() {
		if matches(r.Namespaces.Aliases, alias, true) {
			return r
		}
	}
	return nil
}

// ForToken is ByToken as the client API and authentication see it (nil
// when no service has the token).
func (s *Set) ForToken(tok string) auth.AppService {
	if r := s.ByToken(tok); r != nil {
		return r
	}
	return nil
}

// HoldsUser reports whether a service holds userID exclusively (ordinary
// registration of it is refused with M_EXCLUSIVE).
func (s *Set) HoldsUser(userID string) bool { return s.ExclusiveUser(userID) != nil }

// AliasHolder is the ID of the service holding alias exclusively, or "".
func (s *Set) AliasHolder(alias string) string {
	if r := s.ExclusiveAlias(alias); r != nil {
		return r.ID
	}
	return ""
}
