package app

import (
	"fmt"
	"net/http"
	"net/http/pprof"
	"runtime"

	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
	"github.com/nodelocaldns/nodelocaldns/agent/forward"
	"github.com/nodelocaldns/nodelocaldns/agent/health"
	"github.com/nodelocaldns/nodelocaldns/agent/server"
)

// pluginOptions sets the options of the log, errors, bufsize and debug
// plugins of server block s on b.
func (a *agent) pluginOptions(b *server.Block, s corefile.Server) error {
	if len(s.LogRules) > 0 {
		b.LogRules = server.NewLogRules(s.LogRules)
	}
	if len(s.ErrorRules) > 0 {
		l, err := server.NewErrorLog(a.logger, s.ErrorRules)
		if err != nil {
			return fmt.Errorf("server block %v: %w", s.Zones, err)
		}
		b.ErrorLog = l
	}
	b.BufSize, b.Debug = s.BufSize, s.Debug
	return nil
}

// forwardOptions are the forwarder options of block s: the bufsize
// plugin's size is also the EDNS0 size of the queries sent upstream.
func (a *agent) forwardOptions(s corefile.Server) forward.Options {
	return forward.Options{Registerer: a.reg, UDPSize: uint16(s.BufSize)}
}

// applyGlobal applies the settings of cfg that hold for the whole
// process: the timeouts plugin's TCP timeouts (the parser makes sure the
// blocks agree) and pprof's block profile rate.
func (a *agent) applyGlobal(cfg *corefile.Config) {
	var timeouts *corefile.Timeouts
	rate := 0
	for _, s := range cfg.Servers {
		if s.Timeouts != nil {
			timeouts = s.Timeouts
		}
		rate = max(rate, s.PprofBlockRate)
	}
	a.srv.SetTCPTimeouts(timeouts)
	runtime.SetBlockProfileRate(rate)
}

// pprofEndpoints are the pprof plugin's handlers under /debug/pprof/.
func pprofEndpoints() health.Endpoints {
	return health.Endpoints{
		"/debug/pprof/":        http.HandlerFunc(pprof.Index),
		"/debug/pprof/cmdline": http.HandlerFunc(pprof.Cmdline),
		"/debug/pprof/profile": http.HandlerFunc(pprof.Profile),
		"/debug/pprof/symbol":  http.HandlerFunc(pprof.Symbol),
		"/debug/pprof/trace":   http.HandlerFunc(pprof.Trace),
	}
}
