package corefile

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strconv"
	"strings"

	"github.com/coredns/caddy/caddyfile"
	"github.com/miekg/dns"
)

// forwardMoreOption parses the forward options beyond those of the
// official ConfigMap: tls, tls_servername, max_connect_attempts,
// max_idle_conns, next, failover and failfast_all_unhealthy_upstreams.
func (p *blockParser) forwardMoreOption(d *caddyfile.Dispenser, opt string, args []string, f *Forward, tlsServerName *string) error {
	count := func(what string, allowZero bool) (int, error) {
		if len(args) != 1 {
			return 0, p.wrongArgs(d, "forward "+opt, args)
		}
		n, err := strconv.ParseUint(args[0], 10, 31)
		if err != nil || n == 0 && !allowZero {
			return 0, p.errf(d, "forward %s %q: want %s", opt, args[0], what)
		}
		return int(n), nil
	}
	var err error
	switch opt {
	case "tls":
		return p.forwardTLS(d, args, f)
	case "tls_servername":
		if len(args) != 1 {
			return p.wrongArgs(d, "forward tls_servername", args)
		}
		name := strings.TrimSuffix(args[0], ".")
		if _, ok := dns.IsDomainName(name); !ok || name == "" || strings.ContainsAny(name, " \t\\\"{}/%") {
			return p.errf(d, "forward tls_servername %q: not a host name", args[0])
		}
		*tlsServerName = name
	case "max_connect_attempts":
		f.MaxConnectAttempts, err = count("a non-negative number", true)
	case "max_idle_conns":
		f.MaxIdleConns, err = count("a non-negative number", true)
	case "next", "failover":
		if len(args) == 0 {
			return p.wrongArgs(d, "forward "+opt, args)
		}
		for _, a := range args {
			rc, ok := dns.StringToRcode[strings.ToUpper(a)]
			if !ok {
				return p.errf(d, "forward %s: %q is not a valid rcode", opt, a)
			}
			if opt == "failover" && rc == dns.RcodeSuccess {
				return p.errf(d, "forward failover: NOERROR cannot be used")
			}
			if opt == "next" {
				f.Next = append(f.Next, rc)
			} else {
				f.Failover = append(f.Failover, rc)
			}
		}
	case "failfast_all_unhealthy_upstreams":
		if len(args) != 0 {
			return p.wrongArgs(d, "forward "+opt, args)
		}
		f.FailFast = true
	default:
		return p.errf(d, "unknown option %q of plugin \"forward\"", opt)
	}
	return err
}

// forwardTLS parses `tls [CERT KEY] [CA]`: no argument verifies upstreams
// with the system's CAs, CA with that file, CERT KEY adds a client
// certificate. The files are read (with ParseOptions.ReadFile) and checked
// now, so that a bad file is refused with its line.
func (p *blockParser) forwardTLS(d *caddyfile.Dispenser, args []string, f *Forward) error {
	if len(args) > 3 {
		return p.wrongArgs(d, "forward tls", args)
	}
	read := func(path string) ([]byte, error) {
		b, err := p.opts.ReadFile(path)
		if err != nil {
			return nil, p.errf(d, "forward tls: %v", err)
		}
		return b, nil
	}
	var err error
	f.TLSCertPEM, f.TLSKeyPEM, f.TLSCAPEM = nil, nil, nil
	if len(args) >= 2 {
		if f.TLSCertPEM, err = read(args[0]); err != nil {
			return err
		}
		if f.TLSKeyPEM, err = read(args[1]); err != nil {
			return err
		}
		if _, err := tls.X509KeyPair(f.TLSCertPEM, f.TLSKeyPEM); err != nil {
			return p.errf(d, "forward tls: client certificate %s and key %s: %v", args[0], args[1], err)
		}
	}
	if len(args) == 1 || len(args) == 3 {
		ca := args[len(args)-1]
		if f.TLSCAPEM, err = read(ca); err != nil {
			return err
		}
		if !x509.NewCertPool().AppendCertsFromPEM(f.TLSCAPEM) {
			return p.errf(d, "forward tls: no PEM certificate in CA file %s", ca)
		}
	}
	return nil
}

// applyTLSServerName gives the tls:// upstreams the tls_servername; as in
// CoreDNS, an upstream with a name of its own (tls://IP%NAME) and
// tls_servername at once is an error.
func applyTLSServerName(f *Forward, name string) error {
	if name == "" {
		return nil
	}
	for addr, own := range f.TLS {
		if own != "" {
			return fmt.Errorf("both tls_servername (%q) and the upstream's own TLS server name (%q) are set for %s", name, own, addr)
		}
		f.TLS[addr] = name
	}
	// Without tls:// upstreams it has no effect, as in CoreDNS.
	return nil
}
