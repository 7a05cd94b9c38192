// Package images builds the webhook and agent container images without a
// Docker engine, with go-containerregistry: the webhook on an empty base (a
// static binary run as user 65532), the agent on a minimal root filesystem
// unpacked from Debian packages (iptables and the libraries it needs, found
// with apt-cache depends, fetched with apt-get download, unpacked with
// dpkg-deb -x). Every image is built for each of Options.Platforms
// (linux/amd64 and linux/arm64 by default: Go cross-compiles, and the agent's
// packages are Debian's for that architecture). Each image is written as an
// OCI image layout tarball holding one image index over the platforms
// (<name>.oci.tar, for podman/skopeo/crane/containerd/docker >= 25), and the
// first platform's image as a `docker load` tarball (<name>.docker.tar).
package images

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Image names (kustomize's images: entries can rename them).
const (
	WebhookRepo = "nodelocaldns/webhook"
	AgentRepo   = "nodelocaldns/agent"
	// NonRootUID is the webhook's user and group.
	NonRootUID = 65532
)

// Package sources of Options.Source.
const (
	SourceDownload  = "download"
	SourceInstalled = "installed"
)

// AgentPackages are the Debian packages the agent's root filesystem starts
// from; their Depends/Pre-Depends are added by apt-cache depends.
var AgentPackages = []string{"iptables"}

// skipPackages never go into the image: package management and shells the
// agent does not run.
var skipPackages = map[string]bool{
	"debconf": true, "dpkg": true, "perl-base": true, "bash": true, "coreutils": true,
	"debianutils": true, "init-system-helpers": true, "sensible-utils": true,
}

// pruneDirs are removed from the unpacked packages.
var pruneDirs = []string{"usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/lintian", "usr/share/locale", "usr/share/bug"}

// epoch is the timestamp of every file and of the images, for reproducible
// layers.
var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Options configure Build.
type Options struct {
	// Out receives the tarballs.
	Out string
	// Repo is the repository root (the Go module).
	Repo string
	// Version is the image tag and the version label.
	Version string
	// Revision is the source revision label ("" = unknown).
	Revision string
	// DebCache keeps downloaded .deb files between builds ("" = Out/debs).
	DebCache string
	// Source of the agent's Debian packages: SourceDownload (apt-get
	// download + dpkg-deb -x, the default) or SourceInstalled (the files of
	// the packages installed on this machine, from dpkg-query -L: offline,
	// for tests).
	Source string
	// Platforms are the os/arch pairs to build (nil = DefaultPlatforms);
	// only linux is supported. The first one goes into the docker tarball.
	Platforms []string
	// Log receives progress lines (nil = discard).
	Log io.Writer
}

// DefaultPlatforms are the platforms `make images` builds.
var DefaultPlatforms = []string{"linux/amd64", "linux/arm64"}

// Platform is one built image of an index.
type Platform struct {
	Arch     string // GOARCH and Debian architecture: amd64, arm64
	Digest   v1.Hash
	Packages []string // Debian packages in the image (agent)
}

// Result describes one built image.
type Result struct {
	Name      string // "webhook" or "agent"
	Ref       string // repository:tag
	OCITar    string
	DockerTar string
	// Digest is the image index's.
	Digest    v1.Hash
	Platforms []Platform
}

// Build builds both images and writes their tarballs into opts.Out.
func Build(ctx context.Context, opts Options) ([]Result, error) {
	if opts.Out == "" || opts.Repo == "" {
		return nil, errors.New("images: Out and Repo are required")
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	switch opts.Source {
	case "":
		opts.Source = SourceDownload
	case SourceDownload, SourceInstalled:
	default:
		return nil, fmt.Errorf("images: unknown package source %q", opts.Source)
	}
	if opts.DebCache == "" {
		opts.DebCache = filepath.Join(opts.Out, "debs")
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if len(opts.Platforms) == 0 {
		opts.Platforms = DefaultPlatforms
	}
	for _, p := range opts.Platforms {
		if _, err := archOf(p); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(opts.Out, 0o755); err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	work, err := os.MkdirTemp("", "images-")
	if err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	defer os.RemoveAll(work)

	var results []Result
	for _, b := range []struct {
		short, repo string
		build       func(context.Context, Options, string, string) (built, error)
	}{{"webhook", WebhookRepo, buildWebhook}, {"agent", AgentRepo, buildAgent}} {
		var imgs []built
		for _, p := range opts.Platforms {
			arch, _ := archOf(p)
			img, err := b.build(ctx, opts, work, arch)
			if err != nil {
				return nil, err
			}
			imgs = append(imgs, img)
		}
		r, err := write(opts, b.short, b.repo, imgs)
		if err != nil {
			return nil, err
		}
		results = append(results, r)
	}
	return results, nil
}

// archOf returns the architecture of an os/arch platform.
func archOf(platform string) (string, error) {
	goos, arch, ok := strings.Cut(platform, "/")
	if !ok || goos != "linux" || (arch != "amd64" && arch != "arm64") {
		return "", fmt.Errorf("images: platform %q: want linux/amd64 or linux/arm64", platform)
	}
	return arch, nil
}

// built is one platform's image before it goes into an index.
type built struct {
	arch     string
	cfg      v1.Config
	layers   []v1.Layer
	packages []string
}

func buildWebhook(ctx context.Context, opts Options, work, arch string) (built, error) {
	bin, err := goBuild(ctx, opts, work, "webhook", arch)
	if err != nil {
		return built{}, err
	}
	files := []file{
		{path: "etc/passwd", mode: 0o644, data: []byte(fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", NonRootUID, NonRootUID))},
		{path: "etc/group", mode: 0o644, data: []byte(fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", NonRootUID))},
		{path: "home/nonroot", dir: true, mode: 0o700, uid: NonRootUID},
		{path: "tmp", dir: true, mode: 0o1777},
		{path: "webhook", mode: 0o755, src: bin},
	}
	layer, err := layerOf(files)
	if err != nil {
		return built{}, err
	}
	cfg := v1.Config{
		User:       fmt.Sprintf("%d:%d", NonRootUID, NonRootUID),
		Entrypoint: []string{"/webhook"},
		WorkingDir: "/",
		Env:        []string{"PATH=/"},
		Labels: labels(opts, "node-local-dns webhook",
			"Mutating admission webhook that points pods at the node-local DNS cache."),
		ExposedPorts: map[string]struct{}{"9443/tcp": {}},
	}
	return built{arch: arch, cfg: cfg, layers: []v1.Layer{layer}}, nil
}

func buildAgent(ctx context.Context, opts Options, work, arch string) (built, error) {
	bin, err := goBuild(ctx, opts, work, "agent", arch)
	if err != nil {
		return built{}, err
	}
	pkgs, err := resolvePackages(ctx, AgentPackages, arch)
	if err != nil {
		return built{}, err
	}
	fmt.Fprintf(opts.Log, "agent %s: Debian packages %s\n", arch, strings.Join(pkgs, " "))
	rootfs := filepath.Join(work, "agent-rootfs-"+arch)
	if err := unpackDebs(ctx, opts, pkgs, arch, rootfs); err != nil {
		return built{}, err
	}
	base, err := layerOfDir(rootfs)
	if err != nil {
		return built{}, err
	}
	app, err := layerOf([]file{
		{path: "etc/passwd", mode: 0o644, data: []byte("root:x:0:0:root:/root:/sbin/nologin\n")},
		{path: "etc/group", mode: 0o644, data: []byte("root:x:0:\n")},
		{path: "tmp", dir: true, mode: 0o1777},
		{path: "run", dir: true, mode: 0o755},
		{path: "etc/coredns", dir: true, mode: 0o755},
		{path: "agent", mode: 0o755, src: bin},
	})
	if err != nil {
		return built{}, err
	}
	cfg := v1.Config{
		// Root with NET_ADMIN only (see manifests/agent): it manages the
		// node's interface and iptables rules.
		User:       "0:0",
		Entrypoint: []string{"/agent"},
		WorkingDir: "/",
		Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Labels: labels(opts, "node-local-dns agent",
			"Node-local DNS cache, a drop-in replacement for k8s-dns-node-cache."),
		ExposedPorts: map[string]struct{}{"53/udp": {}, "53/tcp": {}, "9253/tcp": {}, "9353/tcp": {}, "8080/tcp": {}},
	}
	return built{arch: arch, cfg: cfg, layers: []v1.Layer{base, app}, packages: pkgs}, nil
}

func labels(opts Options, title, description string) map[string]string {
	l := map[string]string{
		"org.opencontainers.image.title":       title,
		"org.opencontainers.image.description": description,
		"org.opencontainers.image.version":     opts.Version,
		"org.opencontainers.image.source":      "https://github.com/nodelocaldns/nodelocaldns",
		"org.opencontainers.image.licenses":    "Apache-2.0",
		"org.opencontainers.image.created":     epoch.Format(time.RFC3339),
	}
	if opts.Revision != "" {
		l["org.opencontainers.image.revision"] = opts.Revision
	}
	return l
}

// write assembles one image per platform, the index over them, and writes
// both tarballs.
func write(opts Options, short, repo string, imgs []built) (Result, error) {
	ref, err := name.NewTag(repo + ":" + opts.Version)
	if err != nil {
		return Result{}, fmt.Errorf("images: tag: %w", err)
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	r := Result{Name: short, Ref: ref.String(),
		OCITar:    filepath.Join(opts.Out, short+".oci.tar"),
		DockerTar: filepath.Join(opts.Out, short+".docker.tar"),
	}
	var first v1.Image
	for _, b := range imgs {
		img, err := image(short, b)
		if err != nil {
			return Result{}, err
		}
		digest, err := img.Digest()
		if err != nil {
			return Result{}, fmt.Errorf("images: %s %s digest: %w", short, b.arch, err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: b.arch}},
		})
		r.Platforms = append(r.Platforms, Platform{Arch: b.arch, Digest: digest, Packages: b.packages})
		if first == nil {
			first = img
		}
	}
	if r.Digest, err = idx.Digest(); err != nil {
		return Result{}, fmt.Errorf("images: %s index digest: %w", short, err)
	}
	if err := tarball.WriteToFile(r.DockerTar, ref, first); err != nil {
		return Result{}, fmt.Errorf("images: write %s: %w", r.DockerTar, err)
	}
	if err := writeOCITar(r.OCITar, ref, idx); err != nil {
		return Result{}, err
	}
	fmt.Fprintf(opts.Log, "%s: %s index %s\n", short, r.Ref, r.Digest)
	for _, p := range r.Platforms {
		fmt.Fprintf(opts.Log, "  linux/%s %s\n", p.Arch, p.Digest)
	}
	fmt.Fprintf(opts.Log, "  %s (index)\n  %s (linux/%s)\n", r.OCITar, r.DockerTar, imgs[0].arch)
	return r, nil
}

// image assembles one platform's image.
func image(short string, b built) (v1.Image, error) {
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), b.layers...)
	if err != nil {
		return nil, fmt.Errorf("images: %s layers: %w", short, err)
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("images: %s config: %w", short, err)
	}
	cf = cf.DeepCopy()
	cf.Config = b.cfg
	cf.OS, cf.Architecture = "linux", b.arch
	cf.Created = v1.Time{Time: epoch}
	cf.Author = "nodelocaldns"
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, fmt.Errorf("images: %s config: %w", short, err)
	}
	return img, nil
}

// writeOCITar writes an OCI image layout holding the index idx (tagged ref)
// as a tar.
func writeOCITar(path string, ref name.Tag, idx v1.ImageIndex) error {
	dir, err := os.MkdirTemp("", "oci-layout-")
	if err != nil {
		return fmt.Errorf("images: %w", err)
	}
	defer os.RemoveAll(dir)
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("images: OCI layout: %w", err)
	}
	if err := lp.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": ref.TagStr(),
		"io.containerd.image.name":          ref.String(),
	})); err != nil {
		return fmt.Errorf("images: OCI layout: %w", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr := &tar.Header{Name: filepath.ToSlash(rel), Mode: 0o644, ModTime: epoch, Typeflag: tar.TypeReg, Size: info.Size()}
		if d.IsDir() {
			hdr = &tar.Header{Name: filepath.ToSlash(rel) + "/", Mode: 0o755, ModTime: epoch, Typeflag: tar.TypeDir}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = os.WriteFile(path, buf.Bytes(), 0o644)
	}
	if err != nil {
		return fmt.Errorf("images: write %s: %w", path, err)
	}
	return nil
}

// goBuild builds a static binary of ./<cmd> for linux/arch.
func goBuild(ctx context.Context, opts Options, work, cmd, arch string) (string, error) {
	out := filepath.Join(work, cmd+"-"+arch)
	c := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", out, "./"+cmd)
	c.Dir = opts.Repo
	c.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if b, err := c.CombinedOutput(); err != nil {
		return "", fmt.Errorf("images: go build ./%s for linux/%s: %w\n%s", cmd, arch, err, b)
	}
	fmt.Fprintf(opts.Log, "%s: built static binary for linux/%s\n", cmd, arch)
	return out, nil
}

// resolvePackages returns roots plus their Depends and Pre-Depends for the
// Debian architecture arch, recursively (the first alternative of each, the
// first provider of a virtual package), minus skipPackages, sorted, without
// architecture qualifiers.
func resolvePackages(ctx context.Context, roots []string, arch string) ([]string, error) {
	seen := map[string]bool{}
	queue := append([]string(nil), roots...)
	for len(queue) > 0 {
		pkg := queue[0]
		queue = queue[1:]
		if seen[pkg] || skipPackages[pkg] {
			continue
		}
		seen[pkg] = true
		apt, err := aptName(ctx, pkg, arch)
		if err != nil {
			return nil, err
		}
		out, err := exec.CommandContext(ctx, "apt-cache", "depends", "--no-recommends", "--no-suggests",
			"--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", apt).Output()
		if err != nil {
			return nil, fmt.Errorf("images: apt-cache depends %s: %w", apt, err)
		}
		deps, err := parseDepends(string(out))
		if err != nil {
			return nil, fmt.Errorf("images: apt-cache depends %s: %w", apt, err)
		}
		queue = append(queue, deps...)
	}
	var pkgs []string
	for p := range seen {
		pkgs = append(pkgs, p)
	}
	sort.Strings(pkgs)
	return pkgs, nil
}

// hostArch is dpkg's architecture of this machine.
func hostArch(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "dpkg", "--print-architecture").Output()
	if err != nil {
		return "", fmt.Errorf("images: dpkg --print-architecture: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// aptName is how apt names pkg for arch: pkg itself on the host's
// architecture and for Architecture: all packages, else pkg:arch. A foreign
// architecture apt does not know is an error that says how to add it.
func aptName(ctx context.Context, pkg, arch string) (string, error) {
	host, err := hostArch(ctx)
	if err != nil {
		return "", err
	}
	if arch == host {
		return pkg, nil
	}
	qualified := pkg + ":" + arch
	if candidate(ctx, qualified) != "" {
		return qualified, nil
	}
	if out, err := exec.CommandContext(ctx, "apt-cache", "show", "--no-all-versions", pkg).Output(); err == nil &&
		strings.Contains(string(out), "\nArchitecture: all\n") {
		return pkg, nil
	}
	return "", fmt.Errorf("images: apt has no %s: add the architecture with `dpkg --add-architecture %s && apt-get update` (tests/install-deps.sh does)", qualified, arch)
}

// candidate returns apt's candidate version of pkg ("" = none).
func candidate(ctx context.Context, pkg string) string {
	out, err := exec.CommandContext(ctx, "apt-cache", "policy", pkg).Output()
	if err != nil {
		return ""
	}
	for line := range strings.SplitSeq(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Candidate:"); ok {
			if v = strings.TrimSpace(v); v != "(none)" {
				return v
			}
		}
	}
	return ""
}

// parseDepends reads `apt-cache depends` output: the first alternative of
// every Depends/PreDepends line; a virtual package (<name>) stands for the
// first provider listed under it (for a foreign architecture, apt shows
// Architecture: all packages such as netbase this way) and is skipped when
// none is listed.
func parseDepends(out string) ([]string, error) {
	var deps []string
	lines := strings.Split(out, "\n")
	if len(lines) == 0 || strings.TrimSpace(lines[0]) == "" {
		return nil, errors.New("empty output")
	}
	alternative, wantProvider := false, false
	for _, line := range lines[1:] {
		trimmed := strings.TrimSpace(line)
		isAlt := strings.HasPrefix(trimmed, "|")
		trimmed = strings.TrimPrefix(trimmed, "|")
		kind, pkg, ok := strings.Cut(trimmed, ":")
		if trimmed != "" && !strings.Contains(trimmed, " ") && (!ok || !strings.HasSuffix(kind, "epends")) {
			// A provider line under a virtual package: "    netbase".
			if wantProvider {
				deps = append(deps, strings.TrimPrefix(kind, "<"))
				wantProvider = false
			}
			continue
		}
		wantProvider = false
		if !ok || (kind != "Depends" && kind != "PreDepends") {
			alternative = false
			continue
		}
		pkg = strings.TrimSpace(pkg)
		wasAlt := alternative
		alternative = isAlt // the next line is another alternative of this one
		if wasAlt {
			continue
		}
		if strings.HasPrefix(pkg, "<") {
			wantProvider = true
			continue
		}
		if i := strings.IndexByte(pkg, ':'); i >= 0 { // libc6:amd64
			pkg = pkg[:i]
		}
		deps = append(deps, pkg)
	}
	return deps, nil
}

// unpackDebs downloads the packages (kept in the cache) and unpacks them
// into dir, without docs, then adds what dpkg's maintainer scripts would
// have: the update-alternatives links of iptables.
func unpackDebs(ctx context.Context, opts Options, pkgs []string, arch, dir string) error {
	if err := os.MkdirAll(opts.DebCache, 0o755); err != nil {
		return fmt.Errorf("images: %w", err)
	}
	host, err := hostArch(ctx)
	if err != nil {
		return err
	}
	for _, pkg := range pkgs {
		if opts.Source == SourceInstalled && arch == host {
			if err := copyInstalled(ctx, pkg, dir); err != nil {
				return err
			}
			continue
		}
		deb, err := fetchDeb(ctx, opts, pkg, arch)
		if err != nil {
			return err
		}
		if b, err := exec.CommandContext(ctx, "dpkg-deb", "-x", deb, dir).CombinedOutput(); err != nil {
			return fmt.Errorf("images: dpkg-deb -x %s: %w\n%s", deb, err, b)
		}
	}
	for _, d := range pruneDirs {
		if err := os.RemoveAll(filepath.Join(dir, d)); err != nil {
			return fmt.Errorf("images: prune %s: %w", d, err)
		}
	}
	// Debian's postinst points iptables at the nft backend via alternatives;
	// the agent calls iptables-nft/-legacy directly and falls back to these.
	for _, l := range []struct{ link, target string }{
		{"usr/sbin/iptables", "iptables-nft"},
		{"usr/sbin/iptables-save", "iptables-nft-save"},
		{"usr/sbin/iptables-restore", "iptables-nft-restore"},
		{"usr/sbin/ip6tables", "ip6tables-nft"},
		{"usr/sbin/ip6tables-save", "ip6tables-nft-save"},
		{"usr/sbin/ip6tables-restore", "ip6tables-nft-restore"},
	} {
		p := filepath.Join(dir, l.link)
		if _, err := os.Lstat(p); err == nil {
			continue
		}
		if _, err := os.Lstat(filepath.Join(filepath.Dir(p), l.target)); err != nil {
			return fmt.Errorf("images: %s missing from the iptables package", l.target)
		}
		if err := os.Symlink(l.target, p); err != nil {
			return fmt.Errorf("images: %w", err)
		}
	}
	return nil
}

// copyInstalled copies the files and symlinks of the installed package pkg
// (dpkg-query -L) into dir, as dpkg-deb -x would unpack them.
func copyInstalled(ctx context.Context, pkg, dir string) error {
	out, err := exec.CommandContext(ctx, "dpkg-query", "-L", pkg).Output()
	if err != nil {
		return fmt.Errorf("images: dpkg-query -L %s (is it installed?): %w", pkg, err)
	}
	for p := range strings.SplitSeq(string(out), "\n") {
		p = strings.TrimSpace(p)
		if !strings.HasPrefix(p, "/") || p == "/." {
			continue
		}
		info, err := os.Lstat(p)
		if err != nil {
			continue // diverted or removed by the admin
		}
		dst := filepath.Join(dir, p)
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			info = st // /lib64 -> usr/lib64 on merged-/usr hosts: a directory in the image
		}
		switch {
		case info.IsDir():
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return fmt.Errorf("images: %w", err)
			}
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return fmt.Errorf("images: %w", err)
			}
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return fmt.Errorf("images: %w", err)
			}
			os.Remove(dst)
			if err := os.Symlink(target, dst); err != nil {
				return fmt.Errorf("images: %w", err)
			}
		case info.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return fmt.Errorf("images: %w", err)
			}
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return fmt.Errorf("images: %w", err)
			}
			if err := os.WriteFile(dst, data, info.Mode().Perm()); err != nil {
				return fmt.Errorf("images: %w", err)
			}
		}
	}
	return nil
}

// fetchDeb returns the cached .deb of pkg's candidate version, downloading it
// with apt-get download when missing.
func fetchDeb(ctx context.Context, opts Options, pkg, arch string) (string, error) {
	apt, err := aptName(ctx, pkg, arch)
	if err != nil {
		return "", err
	}
	version := candidate(ctx, apt)
	if version == "" {
		return "", fmt.Errorf("images: no candidate version of %s (apt-get update?)", apt)
	}
	// apt-get download names files <pkg>_<version with : as %3a>_<arch>.deb,
	// <arch> being "all" for Architecture: all packages.
	prefix := filepath.Join(opts.DebCache, pkg+"_"+strings.ReplaceAll(version, ":", "%3a")+"_")
	find := func() string {
		for _, a := range []string{arch, "all"} {
			if _, err := os.Stat(prefix + a + ".deb"); err == nil {
				return prefix + a + ".deb"
			}
		}
		return ""
	}
	if deb := find(); deb != "" {
		return deb, nil
	}
	args := []string{"download", "-q"}
	if os.Geteuid() == 0 {
		args = append(args, "-o", "APT::Sandbox::User=root") // the cache is root's
	}
	c := exec.CommandContext(ctx, "apt-get", append(args, apt+"="+version)...)
	c.Dir = opts.DebCache
	if b, err := c.CombinedOutput(); err != nil {
		return "", fmt.Errorf("images: apt-get download %s=%s: %w\n%s", apt, version, err, b)
	}
	deb := find()
	if deb == "" {
		return "", fmt.Errorf("images: apt-get download %s left no %s{%s,all}.deb", apt, prefix, arch)
	}
	fmt.Fprintf(opts.Log, "agent %s: downloaded %s\n", arch, filepath.Base(deb))
	return deb, nil
}

// file is one entry of a layer built from memory or a host file.
type file struct {
	path string
	dir  bool
	mode int64
	uid  int
	data []byte
	src  string
}

// layerOf builds an uncompressed-then-gzipped layer from files, adding parent
// directories.
func layerOf(files []file) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	for _, f := range files {
		for d := filepath.Dir(f.path); d != "." && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	var parents []string
	for d := range dirs {
		parents = append(parents, d)
	}
	sort.Strings(parents)
	for _, d := range parents {
		if err := tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: epoch}); err != nil {
			return nil, err
		}
	}
	for _, f := range files {
		hdr := &tar.Header{Name: f.path, Mode: f.mode, Uid: f.uid, Gid: f.uid, ModTime: epoch}
		if f.dir {
			hdr.Name += "/"
			hdr.Typeflag = tar.TypeDir
			if err := tw.WriteHeader(hdr); err != nil {
				return nil, err
			}
			continue
		}
		data := f.data
		if f.src != "" {
			var err error
			if data, err = os.ReadFile(f.src); err != nil {
				return nil, fmt.Errorf("images: %w", err)
			}
		}
		hdr.Typeflag = tar.TypeReg
		hdr.Size = int64(len(data))
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return layerFromBytes(buf.Bytes())
}

// layerOfDir builds a layer from a directory tree (owned by root, modes and
// symlinks kept, fixed timestamps).
func layerOfDir(root string) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if info.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		hdr.ModTime, hdr.AccessTime, hdr.ChangeTime = epoch, time.Time{}, time.Time{}
		hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("images: layer of %s: %w", root, err)
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return layerFromBytes(buf.Bytes())
}

func layerFromBytes(data []byte) (v1.Layer, error) {
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("images: layer: %w", err)
	}
	return l, nil
}
