package config

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// GenerateOptions are the choices of `repeater generate-config`.
type GenerateOptions struct {
	Dir              string
	ServerName       string
	Database         string
	Listen           string
	TLSListen        string
	OpenRegistration bool
	SharedSecret     string
	TestNetwork      bool
	AppServiceFiles  []string
	// Part97 makes an amateur-radio mesh node (see Part97) for the
	// station Callsign.
	Part97   bool
	Callsign string
}

// Generate writes a config file, a new signing key and (when TLS is wanted
// and no pair exists) a self-signed certificate into opts.Dir. Existing key
// files are kept. It returns the path of the config file.
func Generate(opts GenerateOptions) (string, error) {
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return "", err
	}
	c := Defaults()
	if opts.ServerName != "" {
		c.ServerName = opts.ServerName
	}
	if opts.Database != "" {
		c.Database = opts.Database
	}
	if opts.Listen != "" {
		c.Listen = opts.Listen
	}
	c.Registration.Open = opts.OpenRegistration
	c.Registration.SharedSecret = opts.SharedSecret
	c.AppServiceConfigFiles = opts.AppServiceFiles
	if opts.TestNetwork {
		c.Registration.Open = true
		c.Registration.Guests = true
		c.RateLimits.Enabled = false
		c.Federation.SkipTLSVerify = true
		c.Push.SkipTLSVerify = true
		c.AppServiceSkipTLSVerify = true
		c.Media.URLPreview.Enabled = true
		c.Media.URLPreview.AllowPrivate = true
		c.Media.URLPreview.SkipTLSVerify = true
		c.Federation.AllowPrivatePeers = true
		c.BcryptCost = 4
	}
	if opts.Part97 {
		applyPart97(c, opts.Callsign, opts.ServerName == "")
	}
	// A test network gets a self-signed pair whether or not it listens
	// for TLS now; the listener itself only comes with --tls-listen.
	if (opts.TLSListen != "" || opts.TestNetwork) && !opts.Part97 {
		c.TLSListen = opts.TLSListen
		c.TLSCert, c.TLSKey = "tls.crt", "tls.key"
		if _, err := os.Stat(filepath.Join(opts.Dir, c.TLSCert)); os.IsNotExist(err) {
			if err := writeSelfSigned(opts.Dir, c.ServerName); err != nil {
				return "", err
			}
		}
	}
	keyPath := filepath.Join(opts.Dir, c.SigningKeyPath)
	if _, err := os.Stat(keyPath); os.IsNotExist(err) {
		if err := writeSigningKey(keyPath); err != nil {
			return "", err
		}
	}
	b, err := c.Marshal()
	if err != nil {
		return "", err
	}
	path := filepath.Join(opts.Dir, "repeater.yaml")
	header := "# Repeater configuration. Every option is documented in config.yaml.example.\n"
	if err := os.WriteFile(path, append([]byte(header), b...), 0o600); err != nil {
		return "", err
	}
	return path, nil
}

func writeSigningKey(path string) error {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	var v [4]byte
	rand.Read(v[:])
	ver := "a_" + base64.RawURLEncoding.EncodeToString(v[:])[:4]
	line := fmt.Sprintf("ed25519 %s %s\n", ver, base64.RawStdEncoding.EncodeToString(priv.Seed()))
	return os.WriteFile(path, []byte(line), 0o600)
}

func writeSelfSigned(dir, serverName string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(serverName)
	if err != nil {
		host = serverName
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: host},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{host, "localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
}
