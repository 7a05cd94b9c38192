package forward

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
)

// tlsConfigs returns the TLS client configuration of each tls:// upstream
// of cfg: the tls option's client certificate and CA (the system's CAs
// without one), the upstream's server name, and a session cache shared by
// the upstreams of one name, so that reconnections resume their session.
func tlsConfigs(cfg corefile.Forward) (map[string]*tls.Config, error) {
	if len(cfg.TLS) == 0 {
		return nil, nil
	}
	base := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.TLSCertPEM != nil || cfg.TLSKeyPEM != nil {
		cert, err := tls.X509KeyPair(cfg.TLSCertPEM, cfg.TLSKeyPEM)
		if err != nil {
			return nil, fmt.Errorf("forward: tls client certificate: %w", err)
		}
		base.Certificates = []tls.Certificate{cert}
	}
	if cfg.TLSCAPEM != nil {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(cfg.TLSCAPEM) {
			return nil, errors.New("forward: tls CA: no PEM certificate")
		}
		base.RootCAs = pool
	}
	byName := map[string]*tls.Config{}
	out := make(map[string]*tls.Config, len(cfg.TLS))
	for addr, name := range cfg.TLS {
		c, ok := byName[name]
		if !ok {
			c = base.Clone()
			c.ServerName = name
			c.ClientSessionCache = tls.NewLRUClientSessionCache(len(cfg.TLS))
			byName[name] = c
		}
		out[addr] = c
	}
	return out, nil
}
