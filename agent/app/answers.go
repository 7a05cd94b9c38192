package app

import (
	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
	"github.com/nodelocaldns/nodelocaldns/agent/plugin/dns64"
	"github.com/nodelocaldns/nodelocaldns/agent/plugin/hosts"
	"github.com/nodelocaldns/nodelocaldns/agent/plugin/loadbalance"
	"github.com/nodelocaldns/nodelocaldns/agent/plugin/rewrite"
	"github.com/nodelocaldns/nodelocaldns/agent/plugin/template"
	"github.com/nodelocaldns/nodelocaldns/agent/plugin/whoami"
	"github.com/nodelocaldns/nodelocaldns/agent/server"
)

// plugins builds the answer-changing plugins of a server block in
// CoreDNS's plugin.cfg order (dns64, loadbalance | cache | rewrite,
// template, hosts | forward | whoami), whatever the order of their lines;
// nil when the block has none. What needs stopping (the hosts file's
// reloading) is added to g.
func (a *agent) plugins(s corefile.Server, g *generation) (*server.Plugins, error) {
	var p server.Plugins
	if s.DNS64 != nil {
		m, err := dns64.NewMetrics(a.reg)
		if err != nil {
			return nil, err
		}
		p.Above = append(p.Above, dns64.New(*s.DNS64, m))
	}
	if s.LoadBalance != nil {
		lb, err := loadbalance.New(*s.LoadBalance, a.logger)
		if err != nil {
			return nil, err
		}
		g.closers = append(g.closers, lb.Close)
		p.Above = append(p.Above, lb)
	}
	if len(s.Rewrite) > 0 {
		rw, err := rewrite.New(s.Rewrite)
		if err != nil {
			return nil, err
		}
		p.Below = append(p.Below, rw)
	}
	if len(s.Templates) > 0 {
		m, err := template.NewMetrics(a.reg)
		if err != nil {
			return nil, err
		}
		t, err := template.New(s.Templates, m)
		if err != nil {
			return nil, err
		}
		p.Below = append(p.Below, t)
	}
	if s.Hosts != nil {
		m, err := hosts.NewMetrics(a.reg)
		if err != nil {
			return nil, err
		}
		h := hosts.New(*s.Hosts, m, a.logger)
		g.closers = append(g.closers, h.Close)
		p.Below = append(p.Below, h)
	}
	if s.Whoami {
		p.After = append(p.After, whoami.Whoami{})
	}
	if len(p.Above)+len(p.Below)+len(p.After) == 0 {
		return nil, nil
	}
	return &p, nil
}
