package agent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
)

// writePKI writes a CA (ca.pem) and a server certificate for dns.test
// (server.pem, server.key) signed by it into dir.
func writePKI(t *testing.T, dir string) {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	write := func(name, typ string, der []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	caKey := newKey()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "agent test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	k := newKey()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "dns.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"dns.test"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	write("ca.pem", "CERTIFICATE", caDER)
	write("server.pem", "CERTIFICATE", der)
	write("server.key", "EC PRIVATE KEY", kb)
}

// startUnboundTLS runs unbound answering DNS over TLS only, on addr
// (ip:port), for example.test (from NSD at external) and cluster.local
// (from NSD at cluster), with the certificate of writePKI in dir.
func startUnboundTLS(t *testing.T, dir, addr, external, cluster string) {
	t.Helper()
	bin := testenv.Binary(t, "unbound", "UNBOUND_BIN")
	host, port, _ := net.SplitHostPort(addr)
	conf := fmt.Sprintf(`server:
    verbosity: 1
    num-threads: 1
    interface: %[1]s@%[2]s
    tls-port: %[2]s
    tls-service-key: "%[3]s/server.key"
    tls-service-pem: "%[3]s/server.pem"
    do-ip6: no
    do-udp: yes
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "%[3]s"
    pidfile: "%[3]s/unbound.pid"
    use-syslog: no
    logfile: ""
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    module-config: "iterator"
    qname-minimisation: no
    local-zone: "test." nodefault
remote-control:
    control-enable: no
forward-zone:
    name: "example.test."
    forward-addr: %[4]s
forward-zone:
    name: "cluster.local."
    forward-addr: %[5]s
`, host, port, dir, hostAt(external), hostAt(cluster))
	path := filepath.Join(dir, "unbound.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(filepath.Join(dir, "unbound.out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(bin, "-d", "-c", path)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start unbound: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "unbound.out"))
			t.Logf("unbound output:\n%s", b)
		}
	})
	// Ready when it answers over TLS (with the test CA).
	pool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	pool.AppendCertsFromPEM(caPEM)
	c := &dns.Client{Net: "tcp-tls", Timeout: 500 * time.Millisecond, TLSConfig: &tls.Config{ServerName: "dns.test", RootCAs: pool}}
	var last string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		m := new(dns.Msg)
		m.SetQuestion("www.example.test.", dns.TypeA)
		r, _, err := c.Exchange(m, addr)
		if err == nil && r.Rcode == dns.RcodeSuccess {
			return
		}
		last = fmt.Sprint(r, err)
	}
	t.Fatalf("unbound does not answer over TLS on %s: %s", addr, last)
}

// hostAt turns host:port into unbound's host@port.
func hostAt(hp string) string {
	h, p, _ := net.SplitHostPort(hp)
	return h + "@" + p
}

// TestForwardOverTLSToUnbound runs the agent with `forward . tls://...` to
// unbound serving DNS over TLS (RFC 7858) on loopback: the agent verifies
// unbound's certificate with the CA of the `tls` option and the name of
// tls_servername (or of tls://IP%NAME:port), and answers through it; a block
// whose server name does not match the certificate answers SERVFAIL.
func TestForwardOverTLSToUnbound(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	writePKI(t, dir)
	e := &env{net: randomNet()}
	e.cluster = StartNSD(t, NSDOptions{Addr: e.ip(1) + ":53", Zones: map[string]string{"cluster.local": clusterZone(e.ip(1))}})
	e.external = StartNSD(t, NSDOptions{Addr: e.ip(2) + ":5300", Zones: map[string]string{"example.test": externalZone()}})
	dot := e.ip(3) + ":8853"
	startUnboundTLS(t, dir, dot, e.external.Addr, e.cluster.Addr)
	ca := filepath.Join(dir, "ca.pem")
	tpl := fmt.Sprintf(`example.test:53 {
    errors
    bind __PILLAR__LOCAL__DNS__
    cache 30
    forward . tls://%[1]s {
        tls %[2]s
        tls_servername dns.test
    }
}
cluster.local:53 {
    errors
    bind __PILLAR__LOCAL__DNS__
    forward . tls://%[3]s%%wrong.test:8853 {
        tls %[2]s
    }
}
big.example.test:53 {
    errors
    bind __PILLAR__LOCAL__DNS__
    forward . tls://%[3]s%%dns.test:8853 {
        tls %[2]s
    }
}
`, dot, ca, e.ip(3))
	e.agent = StartAgent(t, AgentOptions{Bin: agentBin, LocalIP: e.ip(10), ClusterDNS: e.ip(1), Upstreams: []string{e.external.Addr}, Template: tpl})

	for _, proto := range []string{"udp", "tcp"} {
		r := ask(t, proto, e.agent.DNS, "www.example.test.", dns.TypeA)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.10" {
			t.Fatalf("%s: www.example.test through DNS over TLS: %v", proto, r)
		}
	}
	// The large answer (through the tls://IP%NAME:port block) comes whole
	// over TLS and is truncated for UDP clients.
	if r := ask(t, "tcp", e.agent.DNS, "big.example.test.", dns.TypeTXT); len(r.Answer) != 12 {
		t.Fatalf("big.example.test over tcp: %d TXT records, want 12", len(r.Answer))
	}
	if r := ask(t, "udp", e.agent.DNS, "big.example.test.", dns.TypeTXT); !r.Truncated {
		t.Fatalf("big.example.test over udp: not truncated (%d bytes of answers)", r.Len())
	}
	// A server name the certificate does not hold: no connection, SERVFAIL,
	// and cluster.local never reaches NSD.
	before := e.cluster.MustStats(t)["num.queries"]
	if r := ask(t, "udp", e.agent.DNS, "web.default.svc.cluster.local.", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("wrong TLS server name: rcode %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
	if after := e.cluster.MustStats(t)["num.queries"]; after != before {
		t.Fatalf("NSD for cluster.local saw %d queries through a TLS connection that must fail", after-before)
	}
	if got := e.external.MustStats(t)["num.queries"]; got == 0 {
		t.Fatal("NSD for example.test saw no query: the answers did not come through unbound")
	}
}
