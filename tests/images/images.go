// Package images builds the webhook and agent container images without a
// Docker engine, with go-containerregistry: the webhook on an empty base (a
// static binary run as user 65532), the agent on a minimal root filesystem
// unpacked from Debian packages (iptables and the libraries it needs, found
// with apt-cache depends, fetched with apt-get download, unpacked with
// dpkg-deb -x). Each image is written as an OCI image layout tarball
// (<name>.oci.tar, for podman/skopeo/crane/docker >= 25) and as a
// `docker load` tarball (<name>.docker.tar).
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
	// Log receives progress lines (nil = discard).
	Log io.Writer
}

// Result describes one built image.
type Result struct {
	Name      string // "webhook" or "agent"
	Ref       string // repository:tag
	OCITar    string
	DockerTar string
	Digest    v1.Hash
	Packages  []string // Debian packages in the image (agent)
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
	if err := os.MkdirAll(opts.Out, 0o755); err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	work, err := os.MkdirTemp("", "images-")
	if err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	defer os.RemoveAll(work)

	var results []Result
	for _, b := range []func(context.Context, Options, string) (Result, error){buildWebhook, buildAgent} {
		r, err := b(ctx, opts, work)
		if err != nil {
			return nil, err
		}
		results = append(results, r)
	}
	return results, nil
}

func buildWebhook(ctx context.Context, opts Options, work string) (Result, error) {
	bin, err := goBuild(ctx, opts, work, "webhook")
	if err != nil {
		return Result{}, err
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
		return Result{}, err
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
	return write(opts, "webhook", WebhookRepo, cfg, []v1.Layer{layer}, nil)
}

func buildAgent(ctx context.Context, opts Options, work string) (Result, error) {
	bin, err := goBuild(ctx, opts, work, "agent")
	if err != nil {
		return Result{}, err
	}
	pkgs, err := resolvePackages(ctx, AgentPackages)
	if err != nil {
		return Result{}, err
	}
	fmt.Fprintf(opts.Log, "agent: Debian packages %s\n", strings.Join(pkgs, " "))
	rootfs := filepath.Join(work, "agent-rootfs")
	if err := unpackDebs(ctx, opts, pkgs, rootfs); err != nil {
		return Result{}, err
	}
	base, err := layerOfDir(rootfs)
	if err != nil {
		return Result{}, err
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
		return Result{}, err
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
	return write(opts, "agent", AgentRepo, cfg, []v1.Layer{base, app}, pkgs)
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

// write assembles the image and writes both tarballs.
func write(opts Options, short, repo string, cfg v1.Config, layers []v1.Layer, pkgs []string) (Result, error) {
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layers...)
	if err != nil {
		return Result{}, fmt.Errorf("images: %s layers: %w", short, err)
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		return Result{}, fmt.Errorf("images: %s config: %w", short, err)
	}
	cf = cf.DeepCopy()
	cf.Config = cfg
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Created = v1.Time{Time: epoch}
	cf.Author = "nodelocaldns"
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return Result{}, fmt.Errorf("images: %s config: %w", short, err)
	}
	ref, err := name.NewTag(repo + ":" + opts.Version)
	if err != nil {
		return Result{}, fmt.Errorf("images: tag: %w", err)
	}
	digest, err := img.Digest()
	if err != nil {
		return Result{}, fmt.Errorf("images: %s digest: %w", short, err)
	}
	r := Result{Name: short, Ref: ref.String(), Digest: digest, Packages: pkgs,
		OCITar:    filepath.Join(opts.Out, short+".oci.tar"),
		DockerTar: filepath.Join(opts.Out, short+".docker.tar"),
	}
	if err := tarball.WriteToFile(r.DockerTar, ref, img); err != nil {
		return Result{}, fmt.Errorf("images: write %s: %w", r.DockerTar, err)
	}
	if err := writeOCITar(r.OCITar, ref, img); err != nil {
		return Result{}, err
	}
	fmt.Fprintf(opts.Log, "%s: %s %s\n  %s\n  %s\n", short, r.Ref, digest, r.OCITar, r.DockerTar)
	return r, nil
}

// writeOCITar writes an OCI image layout holding img (tagged ref) as a tar.
func writeOCITar(path string, ref name.Tag, img v1.Image) error {
	dir, err := os.MkdirTemp("", "oci-layout-")
	if err != nil {
		return fmt.Errorf("images: %w", err)
	}
	defer os.RemoveAll(dir)
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("images: OCI layout: %w", err)
	}
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{
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

// goBuild builds a static binary of ./<cmd>.
func goBuild(ctx context.Context, opts Options, work, cmd string) (string, error) {
	out := filepath.Join(work, cmd)
	c := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", out, "./"+cmd)
	c.Dir = opts.Repo
	c.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := c.CombinedOutput(); err != nil {
		return "", fmt.Errorf("images: go build ./%s: %w\n%s", cmd, err, b)
	}
	fmt.Fprintf(opts.Log, "%s: built static binary\n", cmd)
	return out, nil
}

// resolvePackages returns roots plus their Depends and Pre-Depends,
// recursively (the first alternative of each), minus skipPackages, sorted.
func resolvePackages(ctx context.Context, roots []string) ([]string, error) {
	seen := map[string]bool{}
	queue := append([]string(nil), roots...)
	for len(queue) > 0 {
		pkg := queue[0]
		queue = queue[1:]
		if seen[pkg] || skipPackages[pkg] {
			continue
		}
		seen[pkg] = true
		out, err := exec.CommandContext(ctx, "apt-cache", "depends", "--no-recommends", "--no-suggests",
			"--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", pkg).Output()
		if err != nil {
			return nil, fmt.Errorf("images: apt-cache depends %s: %w", pkg, err)
		}
		deps, err := parseDepends(string(out))
		if err != nil {
			return nil, fmt.Errorf("images: apt-cache depends %s: %w", pkg, err)
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

// parseDepends reads `apt-cache depends` output: the first alternative of
// every Depends/PreDepends line; virtual packages (<name>) are skipped.
func parseDepends(out string) ([]string, error) {
	var deps []string
	lines := strings.Split(out, "\n")
	if len(lines) == 0 || strings.TrimSpace(lines[0]) == "" {
		return nil, errors.New("empty output")
	}
	alternative := false
	for _, line := range lines[1:] {
		trimmed := strings.TrimSpace(line)
		isAlt := strings.HasPrefix(trimmed, "|")
		trimmed = strings.TrimPrefix(trimmed, "|")
		kind, pkg, ok := strings.Cut(trimmed, ":")
		if !ok || (kind != "Depends" && kind != "PreDepends") {
			alternative = false
			continue
		}
		pkg = strings.TrimSpace(pkg)
		wasAlt := alternative
		alternative = isAlt // the next line is another alternative of this one
		if wasAlt || strings.HasPrefix(pkg, "<") {
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
func unpackDebs(ctx context.Context, opts Options, pkgs []string, dir string) error {
	if err := os.MkdirAll(opts.DebCache, 0o755); err != nil {
		return fmt.Errorf("images: %w", err)
	}
	for _, pkg := range pkgs {
		if opts.Source == SourceInstalled {
			if err := copyInstalled(ctx, pkg, dir); err != nil {
				return err
			}
			continue
		}
		deb, err := fetchDeb(ctx, opts, pkg)
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
func fetchDeb(ctx context.Context, opts Options, pkg string) (string, error) {
	out, err := exec.CommandContext(ctx, "apt-cache", "policy", pkg).Output()
	if err != nil {
		return "", fmt.Errorf("images: apt-cache policy %s: %w", pkg, err)
	}
	version := ""
	for line := range strings.SplitSeq(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Candidate:"); ok {
			version = strings.TrimSpace(v)
		}
	}
	if version == "" || version == "(none)" {
		return "", fmt.Errorf("images: no candidate version of %s (apt-get update?)", pkg)
	}
	// apt-get download names files <pkg>_<version with : as %3a>_<arch>.deb.
	pattern := filepath.Join(opts.DebCache, pkg+"_"+strings.ReplaceAll(version, ":", "%3a")+"_*.deb")
	if m, _ := filepath.Glob(pattern); len(m) > 0 {
		return m[0], nil
	}
	c := exec.CommandContext(ctx, "apt-get", "download", "-q", pkg+"="+version)
	c.Dir = opts.DebCache
	if b, err := c.CombinedOutput(); err != nil {
		return "", fmt.Errorf("images: apt-get download %s=%s: %w\n%s", pkg, version, err, b)
	}
	m, _ := filepath.Glob(pattern)
	if len(m) == 0 {
		return "", fmt.Errorf("images: apt-get download %s left no %s", pkg, pattern)
	}
	fmt.Fprintf(opts.Log, "agent: downloaded %s\n", filepath.Base(m[0]))
	return m[0], nil
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
