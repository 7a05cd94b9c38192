package app

import (
	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
	"github.com/nodelocaldns/nodelocaldns/agent/plugin/hosts"
	"github.com/nodelocaldns/nodelocaldns/agent/server"
)

// plugins builds the answer-changing plugins of a server block in
// CoreDNS's order; nil when it has none. What needs stopping (the hosts
// file's reloading) is added to g.
func (a *agent) plugins(s corefile.Server, g *generation) (*server.Plugins, error) {
	var p server.Plugins
	if s.Hosts != nil {
		m, err := hosts.NewMetrics(a.reg)
		if err != nil {
			return nil, err
		}
		h := hosts.New(*s.Hosts, m, a.logger)
		g.closers = append(g.closers, h.Close)
		p.Below = append(p.Below, h)
	}
	if len(p.Above)+len(p.Below)+len(p.After) == 0 {
		return nil, nil
	}
	return &p, nil
}
