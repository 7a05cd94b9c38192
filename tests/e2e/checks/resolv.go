package main

import (
	"context"
	"fmt"
	"strings"
)

// Namespaces of the checks.
const (
	nsInjected   = "e2e-injected"
	nsUnlabelled = "e2e-plain"
)

// resolvConf is a parsed resolv.conf.
type resolvConf struct {
	nameservers []string
	search      []string
	options     []string
}

func parseResolvConf(text string) resolvConf {
	var rc resolvConf
	for l := range strings.SplitSeq(text, "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "nameserver":
			rc.nameservers = append(rc.nameservers, f[1])
		case "search":
			rc.search = f[1:]
		case "options":
			rc.options = append(rc.options, f[1:]...)
		}
	}
	return rc
}

// wantInjected checks the resolv.conf of an injected pod in namespace ns.
func wantInjected(rc resolvConf, ns, kubeDNS string) error {
	want := []string{localDNSIP, kubeDNS}
	if strings.Join(rc.nameservers, " ") != strings.Join(want, " ") {
		return fmt.Errorf("nameservers %v, want %v", rc.nameservers, want)
	}
	wantSearch := []string{ns + ".svc." + clusterDomain, "svc." + clusterDomain, clusterDomain}
	if len(rc.search) < 3 || strings.Join(rc.search[:3], " ") != strings.Join(wantSearch, " ") {
		return fmt.Errorf("search %v, want %v first", rc.search, wantSearch)
	}
	for _, prefix := range []string{"ndots:", "timeout:", "attempts:"} {
		if !hasPrefixed(rc.options, prefix) {
			return fmt.Errorf("options %v lack %s", rc.options, prefix)
		}
	}
	return nil
}

// wantClusterFirst checks a resolv.conf the kubelet wrote for ClusterFirst.
func wantClusterFirst(rc resolvConf, ns, kubeDNS string) error {
	if strings.Join(rc.nameservers, " ") != kubeDNS {
		return fmt.Errorf("nameservers %v, want [%s] (ClusterFirst)", rc.nameservers, kubeDNS)
	}
	if len(rc.search) == 0 || rc.search[0] != ns+".svc."+clusterDomain {
		return fmt.Errorf("search %v, want %s.svc.%s first", rc.search, ns, clusterDomain)
	}
	return nil
}

func hasPrefixed(list []string, prefix string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

// checkResolvConf is check 1: the resolv.conf the kubelet wrote, read in
// the pods with kubectl exec.
func checkResolvConf(ctx context.Context, e *env) (string, error) {
	kubeDNS := e.get("KUBE_DNS_IP")
	if err := e.ensureNamespace(ctx, nsInjected, map[string]string{injectLabel: "enabled"}); err != nil {
		return "", err
	}
	if err := e.ensureNamespace(ctx, nsUnlabelled, nil); err != nil {
		return "", err
	}
	cases := []struct {
		pod  podSpec
		want func(resolvConf) error
	}{
		{podSpec{ns: nsInjected, name: "plain"}, func(rc resolvConf) error { return wantInjected(rc, nsInjected, kubeDNS) }},
		{podSpec{ns: nsInjected, name: "optout-label", labels: map[string]string{injectLabel: "disabled"}},
			func(rc resolvConf) error { return wantClusterFirst(rc, nsInjected, kubeDNS) }},
		{podSpec{ns: nsInjected, name: "optout-annotation", annotations: map[string]string{injectLabel: "disabled"}},
			func(rc resolvConf) error { return wantClusterFirst(rc, nsInjected, kubeDNS) }},
		{podSpec{ns: nsUnlabelled, name: "unlabelled"}, func(rc resolvConf) error { return wantClusterFirst(rc, nsUnlabelled, kubeDNS) }},
		{podSpec{ns: nsInjected, name: "hostnet", hostNetwork: true, dnsPolicy: "ClusterFirstWithHostNet"},
			func(rc resolvConf) error { return wantInjected(rc, nsInjected, kubeDNS) }},
	}
	var pods []podSpec
	for _, c := range cases {
		pods = append(pods, c.pod)
	}
	if err := e.createPods(ctx, pods...); err != nil {
		return "", err
	}
	ok := 0
	var errs []string
	for _, c := range cases {
		text, err := e.exec(ctx, c.pod.ns, c.pod.name, "cat", "/etc/resolv.conf")
		if err == nil {
			err = c.want(parseResolvConf(text))
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s/%s: %v", c.pod.ns, c.pod.name, err))
			continue
		}
		ok++
	}
	// The plain pod stays for check 2; the others go.
	e.deletePods(ctx, nsInjected, "optout-label", "optout-annotation", "hostnet")
	e.deletePods(ctx, nsUnlabelled, "unlabelled")
	fig := fmt.Sprintf("%d/%d pods as expected (injected, 2 opt-outs, unlabelled ns, hostNetwork)", ok, len(cases))
	if len(errs) > 0 {
		return fig, fmt.Errorf("%s: %s", fig, strings.Join(errs, "; "))
	}
	return fig, nil
}
