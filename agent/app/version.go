package app

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
)

// CoreDNSVersion is the CoreDNS release whose Corefile dialect, answers
// and metrics the agent follows (the one inside node-cache).
const CoreDNSVersion = "1.13.2"

// Version is the agent's version. Release builds set it with
// -ldflags "-X github.com/nodelocaldns/nodelocaldns/agent/app.Version=v1.2.3";
// otherwise it is the module version from the build information, or "dev".
var Version = ""

// version returns the agent's version and the VCS revision it was built
// from ("" when unknown).
func version() (v, revision string) {
	v = Version
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	if v == "" {
		v = "dev"
	}
	return v, revision
}

// VersionString is what -version prints, in CoreDNS's layout: name and
// version, then platform, Go version and revision.
func VersionString() string {
	v, rev := version()
	return fmt.Sprintf("nodelocaldns-agent-%s (CoreDNS-%s compatible)\n%s/%s, %s, %s\n", v, CoreDNSVersion, runtime.GOOS, runtime.GOARCH, runtime.Version(), rev)
}

// PluginsString is what -plugins prints, as CoreDNS 1.13 prints it: the
// names of the Corefile plugins the agent accepts, one a line, sorted.
func PluginsString() string {
	var b strings.Builder
	for _, p := range corefile.Plugins() {
		b.WriteString(p + "\n")
	}
	b.WriteString("\n")
	return b.String()
}
