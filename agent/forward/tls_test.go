package forward

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
)

// testPKI is a CA with a server certificate for dns.test and 127.0.0.1,
// and a client certificate, all in PEM.
type testPKI struct {
	caPEM                 []byte
	serverCert            tls.Certificate
	clientCert, clientKey []byte
	caPool                *x509.CertPool
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey := key()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, usage x509.ExtKeyUsage, names []string, ips []net.IP) ([]byte, []byte) {
		k := key()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "leaf"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			DNSNames: names, IPAddresses: ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	}
	p := &testPKI{caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})}
	sc, sk := issue(2, x509.ExtKeyUsageServerAuth, []string{"dns.test"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if p.serverCert, err = tls.X509KeyPair(sc, sk); err != nil {
		t.Fatal(err)
	}
	p.clientCert, p.clientKey = issue(3, x509.ExtKeyUsageClientAuth, nil, nil)
	p.caPool = x509.NewCertPool()
	p.caPool.AddCert(ca)
	return p
}

// tlsUpstream is a DNS over TLS server (miekg/dns's tcp-tls server over
// crypto/tls) on 127.0.0.1 that answers from zone and counts handshakes.
type tlsUpstream struct {
	addr       string
	queries    atomic.Int32
	handshakes atomic.Int32
}

func startTLSUpstream(t *testing.T, pki *testPKI, requireClientCert bool) *tlsUpstream {
	t.Helper()
	u := &tlsUpstream{}
	cfg := &tls.Config{Certificates: []tls.Certificate{pki.serverCert}, MinVersion: tls.VersionTLS12}
	if requireClientCert {
		cfg.ClientAuth, cfg.ClientCAs = tls.RequireAndVerifyClientCert, pki.caPool
	}
	cfg.VerifyConnection = func(tls.ConnectionState) error { u.handshakes.Add(1); return nil }
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	u.addr = ln.Addr().String()
	srv := &dns.Server{Listener: ln, Net: "tcp-tls", Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		u.queries.Add(1)
		_ = w.WriteMsg(zone.Reply(r))
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	return u
}

func TestForwardOverTLS(t *testing.T) {
	pki := newTestPKI(t)
	for _, tc := range []struct {
		name       string
		serverName string
		ca         bool
		clientCert bool
		needCert   bool
		wantErr    string
	}{
		{name: "server name verified", serverName: "dns.test", ca: true},
		{name: "no server name: the IP is verified", ca: true},
		{name: "client certificate", serverName: "dns.test", ca: true, clientCert: true, needCert: true},
		{name: "wrong server name refused", serverName: "other.test", ca: true, wantErr: "certificate is valid for dns.test"},
		{name: "unknown CA refused (system CAs)", serverName: "dns.test", wantErr: "certificate signed by unknown authority"},
		{name: "missing client certificate refused", serverName: "dns.test", ca: true, needCert: true, wantErr: "no upstream answered"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := startTLSUpstream(t, pki, tc.needCert)
			cfg := corefile.Forward{To: []string{up.addr}, TLS: map[string]string{up.addr: tc.serverName}, MaxFails: 2}
			if tc.ca {
				cfg.TLSCAPEM = pki.caPEM
			}
			if tc.clientCert {
				cfg.TLSCertPEM, cfg.TLSKeyPEM = pki.clientCert, pki.clientKey
			}
			f := newForwarder(t, cfg, fastOpts(nil))
			for i := range 5 {
				r, err := f.Exchange(context.Background(), query("web.default.svc.cluster.local.", dns.TypeA))
				if tc.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
						t.Fatalf("Exchange: %v, want an error with %q", err, tc.wantErr)
					}
					if up.queries.Load() != 0 {
						t.Fatalf("the upstream answered %d queries over a connection that should fail", up.queries.Load())
					}
					return
				}
				if err != nil {
					t.Fatalf("query %d: %v", i, err)
				}
				if got := firstA(t, r); got != "192.0.2.1" {
					t.Fatalf("answer %s, want 192.0.2.1", got)
				}
			}
			if q, h := up.queries.Load(), up.handshakes.Load(); q != 5 || h != 1 {
				t.Fatalf("upstream saw %d queries in %d TLS handshakes, want 5 in 1 (one reused connection)", q, h)
			}
		})
	}
}

// TestTLSSessionResumed checks that a new connection after the idle expiry
// resumes the TLS session instead of a full handshake.
func TestTLSSessionResumed(t *testing.T) {
	pki := newTestPKI(t)
	up := startTLSUpstream(t, pki, false)
	var resumed atomic.Int32
	f := newForwarder(t, corefile.Forward{To: []string{up.addr}, TLS: map[string]string{up.addr: "dns.test"},
		TLSCAPEM: pki.caPEM, Expire: 50 * time.Millisecond}, fastOpts(nil))
	for _, u := range f.upstreams {
		cfg := u.tcp.tls
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if cs.DidResume {
				resumed.Add(1)
			}
			return nil
		}
	}
	for i := range 2 {
		if _, err := f.Exchange(context.Background(), query("web.default.svc.cluster.local.", dns.TypeA)); err != nil {
			t.Fatalf("query %d: %v", i, err)
		}
		time.Sleep(300 * time.Millisecond) // past expire: the connection is closed
	}
	if h := up.handshakes.Load(); h != 2 {
		t.Fatalf("%d handshakes, want 2 (the idle connection expired)", h)
	}
	if resumed.Load() != 1 {
		t.Fatalf("%d resumed sessions, want 1", resumed.Load())
	}
}
