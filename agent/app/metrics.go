package app

import (
	"crypto/sha512"
	"encoding/hex"
	"net"
	"runtime"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
)

// handlerPlugins are the plugins CoreDNS puts in a server block's plugin
// chain, the ones coredns_plugin_enabled lists (bind, health, ready,
// reload, debug, pprof and timeouts configure the server instead).
var handlerPlugins = map[string]bool{
	"bufsize": true, "cache": true, "dns64": true, "errors": true, "forward": true, "hosts": true,
	"loadbalance": true, "log": true, "loop": true, "prometheus": true, "rewrite": true,
	"template": true, "trace": true, "whoami": true,
}

// appMetrics are the process-wide families of CoreDNS v1.13: build
// information, the plugins enabled per server block, and the reload
// plugin's.
type appMetrics struct {
	buildInfo     *prometheus.GaugeVec // coredns_build_info{version,revision,goversion}
	pluginEnabled *prometheus.GaugeVec // coredns_plugin_enabled{server,zone,view,name}
	reloadFailed  prometheus.Counter   // coredns_reload_failed_total
	reloadInfo    *prometheus.GaugeVec // coredns_reload_version_info{hash,value}
}

func newAppMetrics(reg prometheus.Registerer) (*appMetrics, error) {
	m := &appMetrics{
		buildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "coredns", Name: "build_info",
			Help: "A metric with a constant '1' value labeled by version, revision, and goversion from which CoreDNS was built.",
		}, []string{"version", "revision", "goversion"}),
		pluginEnabled: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "coredns", Name: "plugin_enabled",
			Help: "A metric that indicates whether a plugin is enabled on per server and zone basis.",
		}, []string{"server", "zone", "view", "name"}),
		reloadFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "reload", Name: "failed_total",
			Help: "Counter of the number of failed reload attempts.",
		}),
		reloadInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "coredns", Subsystem: "reload", Name: "version_info",
			Help: "A metric with a constant '1' value labeled by hash, and value which type of hash generated.",
		}, []string{"hash", "value"}),
	}
	for _, c := range []prometheus.Collector{m.buildInfo, m.pluginEnabled, m.reloadFailed, m.reloadInfo} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	v, rev := version()
	m.buildInfo.WithLabelValues(v, rev, runtime.Version()).Set(1)
	return m, nil
}

// enabled sets coredns_plugin_enabled to the plugins of cfg, as CoreDNS
// does at every (re)start: one series per listen address, zone and
// plugin of the chain.
func (m *appMetrics) enabled(cfg *corefile.Config) {
	m.pluginEnabled.Reset()
	for _, s := range cfg.Servers {
		hosts := s.Bind
		if len(hosts) == 0 {
			hosts = []string{""}
		}
		for _, h := range hosts {
			server := "dns://" + net.JoinHostPort(h, strconv.Itoa(s.Port))
			for _, zone := range s.Zones {
				for _, p := range s.Plugins {
					if handlerPlugins[p] {
						m.pluginEnabled.WithLabelValues(server, zone, "", p).Set(1)
					}
				}
			}
		}
	}
}

// reloaded records a reload attempt of the Corefile text: the running
// configuration's hash (sha512 of the text; CoreDNS hashes its parsed
// form, so the values differ) and, when it failed, the failure.
func (m *appMetrics) reloaded(text string, oldText string, err error) {
	if oldText != "" {
		m.reloadInfo.DeleteLabelValues("sha512", hash(oldText))
	}
	m.reloadInfo.WithLabelValues("sha512", hash(text)).Set(1)
	if err != nil {
		m.reloadFailed.Inc()
	}
}

func hash(text string) string {
	sum := sha512.Sum512([]byte(text))
	return hex.EncodeToString(sum[:])
}
