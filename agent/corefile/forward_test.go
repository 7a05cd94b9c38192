package corefile

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// selfSigned returns a self-signed certificate and its key in PEM.
func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

// tlsOpts is testOpts with PEM files: /tls/cert.pem, /tls/key.pem and
// /tls/ca.pem (the same certificate), /tls/bad.pem (not PEM).
func tlsOpts(t *testing.T) (ParseOptions, []byte, []byte) {
	t.Helper()
	cert, key := selfSigned(t)
	files := map[string][]byte{"/tls/cert.pem": cert, "/tls/key.pem": key, "/tls/ca.pem": cert, "/tls/bad.pem": []byte("junk")}
	base := testOpts()
	return ParseOptions{ReadFile: func(path string) ([]byte, error) {
		if b, ok := files[path]; ok {
			return b, nil
		}
		if strings.HasPrefix(path, "/tls/") {
			return nil, fmt.Errorf("open %s: %w", path, os.ErrNotExist)
		}
		return base.ReadFile(path)
	}}, cert, key
}

func TestParseForwardTLS(t *testing.T) {
	opts, cert, key := tlsOpts(t)
	for _, tc := range []struct {
		name string
		text string
		to   []string
		tls  map[string]string
		cert bool // client certificate
		ca   bool
	}{
		{name: "default port 853", text: "forward . tls://192.0.2.1", to: []string{"192.0.2.1:853"}, tls: map[string]string{"192.0.2.1:853": ""}},
		{name: "tls_servername", text: "forward . tls://192.0.2.1 tls://[2001:db8::1]:8853 {\ntls_servername dns.example\n}",
			to: []string{"192.0.2.1:853", "[2001:db8::1]:8853"}, tls: map[string]string{"192.0.2.1:853": "dns.example", "[2001:db8::1]:8853": "dns.example"}},
		{name: "per upstream name", text: "forward . tls://9.9.9.9%dns.quad9.net TLS://1.1.1.1%cloudflare-dns.com.:10853",
			to: []string{"9.9.9.9:853", "1.1.1.1:10853"}, tls: map[string]string{"9.9.9.9:853": "dns.quad9.net", "1.1.1.1:10853": "cloudflare-dns.com"}},
		{name: "mixed with plain", text: "forward . 192.0.2.9 tls://192.0.2.1%a.example", to: []string{"192.0.2.9:53", "192.0.2.1:853"}, tls: map[string]string{"192.0.2.1:853": "a.example"}},
		{name: "tls CA", text: "forward . tls://192.0.2.1 {\ntls /tls/ca.pem\n}", to: []string{"192.0.2.1:853"}, tls: map[string]string{"192.0.2.1:853": ""}, ca: true},
		{name: "tls CERT KEY", text: "forward . tls://192.0.2.1 {\ntls /tls/cert.pem /tls/key.pem\n}", to: []string{"192.0.2.1:853"}, tls: map[string]string{"192.0.2.1:853": ""}, cert: true},
		{name: "tls CERT KEY CA", text: "forward . tls://192.0.2.1 {\ntls /tls/cert.pem /tls/key.pem /tls/ca.pem\n}", to: []string{"192.0.2.1:853"}, tls: map[string]string{"192.0.2.1:853": ""}, cert: true, ca: true},
		{name: "tls without arguments: system CAs", text: "forward . tls://192.0.2.1 {\ntls\n}", to: []string{"192.0.2.1:853"}, tls: map[string]string{"192.0.2.1:853": ""}},
		{name: "tls_servername without tls upstreams has no effect", text: "forward . 192.0.2.1 {\ntls_servername x.example\n}", to: []string{"192.0.2.1:53"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse(". {\n"+tc.text+"\n}", opts)
			if err != nil {
				t.Fatal(err)
			}
			f := cfg.Servers[0].Forward
			eq(t, f.To, tc.to)
			if !reflect.DeepEqual(f.TLS, tc.tls) {
				t.Errorf("TLS %v, want %v", f.TLS, tc.tls)
			}
			if tc.cert && (string(f.TLSCertPEM) != string(cert) || string(f.TLSKeyPEM) != string(key)) || !tc.cert && f.TLSCertPEM != nil {
				t.Errorf("client certificate %q, want it: %v", f.TLSCertPEM, tc.cert)
			}
			if tc.ca != (f.TLSCAPEM != nil) {
				t.Errorf("CA %q, want it: %v", f.TLSCAPEM, tc.ca)
			}
		})
	}
}

func TestParseForwardOptions(t *testing.T) {
	cfg, err := Parse(". {\nforward . 192.0.2.1 {\nmax_connect_attempts 3\nmax_idle_conns 8\nnext NXDOMAIN servfail\nfailover SERVFAIL REFUSED\nfailfast_all_unhealthy_upstreams\n}\n}", testOpts())
	if err != nil {
		t.Fatal(err)
	}
	f := cfg.Servers[0].Forward
	eq(t, f.MaxConnectAttempts, 3)
	eq(t, f.MaxIdleConns, 8)
	eq(t, f.Next, []int{dns.RcodeNameError, dns.RcodeServerFailure})
	eq(t, f.Failover, []int{dns.RcodeServerFailure, dns.RcodeRefused})
	eq(t, f.FailFast, true)
}

func TestParseForwardRefusals(t *testing.T) {
	opts, _, _ := tlsOpts(t)
	for _, tc := range []struct{ name, text, want string }{
		{"both server names", "forward . tls://192.0.2.1%a.example {\ntls_servername b.example\n}", `Corefile:2: plugin "forward": both tls_servername ("b.example") and the upstream's own TLS server name ("a.example") are set for 192.0.2.1:853`},
		{"tls hostname", "forward . tls://dns.example", `Corefile:2: plugin "forward": "tls://dns.example": not an IP address...`},
		{"bad server name", "forward . tls://192.0.2.1%a..b", `Corefile:2: plugin "forward": "tls://192.0.2.1%a..b": TLS server name "a..b" is not a host name`},
		{"same address with and without tls", "forward . 192.0.2.1:853 tls://192.0.2.1", `Corefile:2: plugin "forward": 192.0.2.1:853 is given both with and without tls://`},
		{"two names for one address", "forward . tls://192.0.2.1%a.example tls://192.0.2.1%b.example", `Corefile:2: plugin "forward": 192.0.2.1:853 is given twice with different TLS server names`},
		{"tls missing file", "forward . tls://192.0.2.1 {\ntls /tls/none.pem\n}", `Corefile:3: forward tls: open /tls/none.pem: file does not exist`},
		{"tls bad CA", "forward . tls://192.0.2.1 {\ntls /tls/bad.pem\n}", `Corefile:3: forward tls: no PEM certificate in CA file /tls/bad.pem`},
		{"tls key mismatch", "forward . tls://192.0.2.1 {\ntls /tls/cert.pem /tls/bad.pem\n}", `Corefile:3: forward tls: client certificate /tls/cert.pem and key /tls/bad.pem: ...`},
		{"tls too many", "forward . tls://192.0.2.1 {\ntls a b c d\n}", `Corefile:3: forward tls: wrong number of arguments...`},
		{"tls_servername twice args", "forward . tls://192.0.2.1 {\ntls_servername a b\n}", `Corefile:3: forward tls_servername: wrong number of arguments...`},
		{"next bad rcode", "forward . 192.0.2.1 {\nnext NOPE\n}", `Corefile:3: forward next: "NOPE" is not a valid rcode`},
		{"next empty", "forward . 192.0.2.1 {\nnext\n}", `Corefile:3: forward next: wrong number of arguments...`},
		{"failover noerror", "forward . 192.0.2.1 {\nfailover NOERROR\n}", `Corefile:3: forward failover: NOERROR cannot be used`},
		{"failfast with argument", "forward . 192.0.2.1 {\nfailfast_all_unhealthy_upstreams yes\n}", `Corefile:3: forward failfast_all_unhealthy_upstreams: wrong number of arguments...`},
		{"max_connect_attempts negative", "forward . 192.0.2.1 {\nmax_connect_attempts -1\n}", `Corefile:3: forward max_connect_attempts "-1": want a non-negative number`},
		{"max_idle_conns not a number", "forward . 192.0.2.1 {\nmax_idle_conns many\n}", `Corefile:3: forward max_idle_conns "many": want a non-negative number`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(". {\n"+tc.text+"\n}", opts)
			if err == nil {
				t.Fatalf("accepted, want %q", tc.want)
			}
			if prefix, ok := strings.CutSuffix(tc.want, "..."); ok {
				if !strings.HasPrefix(err.Error(), prefix) {
					t.Fatalf("error %q, want prefix %q", err, prefix)
				}
			} else if err.Error() != tc.want {
				t.Fatalf("error %q, want %q", err, tc.want)
			}
		})
	}
}

func TestParseSeveralForwards(t *testing.T) {
	cfg, err := Parse(". {\nforward example.org 192.0.2.1 {\nnext NXDOMAIN\n}\nforward . 192.0.2.2\nforward . tls://192.0.2.3\n}", testOpts())
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Servers[0]
	eq(t, s.Forward.From, "example.org.")
	eq(t, s.Forward.Next, []int{dns.RcodeNameError})
	if len(s.NextForwards) != 2 {
		t.Fatalf("%d further forwards, want 2", len(s.NextForwards))
	}
	eq(t, s.NextForwards[0].To, []string{"192.0.2.2:53"})
	eq(t, s.NextForwards[1].To, []string{"192.0.2.3:853"})
}
