package images

import (
	"archive/tar"
	"context"
	"debug/elf"
	"errors"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
)

func TestParseDepends(t *testing.T) {
	for _, tc := range []struct {
		name string
		out  string
		want []string
	}{
		{"iptables", "iptables\n  Depends: libip4tc2\n  Depends: libc6\n  Depends: <virtual-thing>\n  PreDepends: libgcc-s1\n  Recommends: nftables\n", []string{"libip4tc2", "libc6", "libgcc-s1"}},
		{"alternatives take the first", "x\n |Depends: a\n  Depends: b\n  Depends: c\n", []string{"a", "c"}},
		{"arch qualifier", "x\n  Depends: libc6:amd64\n", []string{"libc6"}},
		{"no dependencies", "netbase\n", nil},
		{"virtual stands for its first provider", "iptables:arm64\n  Depends: libc6:arm64\n  Depends: <netbase:arm64>\n    netbase\n    other\n  Depends: libmnl0:arm64\n", []string{"libc6", "netbase", "libmnl0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseDepends(tc.out)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("parseDepends = %v, want %v", got, tc.want)
			}
		})
	}
	if _, err := parseDepends(""); err == nil {
		t.Error("empty output must be an error")
	}
}

// TestBuildImages builds both images for linux/amd64 and linux/arm64 from
// this checkout (the agent's amd64 Debian packages taken from the ones
// installed here, the arm64 ones downloaded with apt-get), reads the
// tarballs back, checks the index, every image's configuration and file
// system, and (as root) runs the binaries chrooted into the extracted root
// file systems: natively on amd64, under Debian's qemu-user-static on arm64.
func TestBuildImages(t *testing.T) {
	for _, tool := range []string{"go", "apt-cache", "apt-get", "dpkg-query", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Unavailable(t, tool+" not found")
		}
	}
	if err := exec.Command("dpkg-query", "-W", "iptables").Run(); err != nil {
		testenv.Unavailable(t, "iptables package not installed (tests/install-deps.sh)")
	}
	if out, _ := exec.Command("dpkg", "--print-foreign-architectures").Output(); !strings.Contains(string(out), "arm64") {
		testenv.Unavailable(t, "apt has no arm64 packages: dpkg --add-architecture arm64 && apt-get update (tests/install-deps.sh)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute) // a cold build of four binaries on a loaded machine
	defer cancel()
	out := t.TempDir()
	start := time.Now()
	results, err := Build(ctx, Options{Out: out, Repo: testenv.RepoRoot(), Version: "v0.0.0-test", Revision: "abc123",
		Source: SourceInstalled, DebCache: debCache(t)})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	t.Logf("built %d images in %s", len(results), time.Since(start).Round(time.Millisecond))
	if len(results) != 2 {
		t.Fatalf("want 2 images, got %d", len(results))
	}
	for _, r := range results {
		t.Run(r.Name, func(t *testing.T) {
			imgs := readOCITar(t, r)
			if got := slices.Sorted(maps.Keys(imgs)); !slices.Equal(got, []string{"amd64", "arm64"}) {
				t.Fatalf("index platforms %v, want amd64 and arm64", got)
			}
			checkDockerTar(t, r, imgs["amd64"])
			for _, p := range r.Platforms {
				t.Run(p.Arch, func(t *testing.T) {
					img := imgs[p.Arch]
					if d, _ := img.Digest(); d != p.Digest {
						t.Errorf("index holds %s for %s, Build reported %s", d, p.Arch, p.Digest)
					}
					cf, err := img.ConfigFile()
					if err != nil {
						t.Fatal(err)
					}
					c := cf.Config
					if cf.OS != "linux" || cf.Architecture != p.Arch {
						t.Errorf("config platform %s/%s, want linux/%s", cf.OS, cf.Architecture, p.Arch)
					}
					for _, l := range []string{"org.opencontainers.image.title", "org.opencontainers.image.source", "org.opencontainers.image.description"} {
						if c.Labels[l] == "" {
							t.Errorf("label %s missing (%v)", l, c.Labels)
						}
					}
					if c.Labels["org.opencontainers.image.version"] != "v0.0.0-test" || c.Labels["org.opencontainers.image.revision"] != "abc123" {
						t.Errorf("version/revision labels %v", c.Labels)
					}
					root := extract(t, img)
					size := dirSize(t, root)
					t.Logf("%s linux/%s: %d layers, %.1f MiB unpacked, digest %s", r.Ref, p.Arch, len(mustLayers(t, img)), float64(size)/(1<<20), p.Digest)
					run := runner(t, root, p.Arch)
					switch r.Name {
					case "webhook":
						checkWebhook(t, c, root, p.Arch, run)
					case "agent":
						checkAgent(t, c, root, p.Arch, p.Packages, run)
					default:
						t.Fatalf("unexpected image %q", r.Name)
					}
				})
			}
		})
	}
}

// debCache keeps the downloaded arm64 packages between runs (bin/images/debs,
// which `make images` uses too).
func debCache(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(testenv.RepoRoot(), "bin", "images", "debs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// runFunc runs a command of an image's root file system as a user and
// returns its output; env (VAR=value) goes to the program only.
type runFunc func(t *testing.T, user string, env []string, args ...string) string

// runner runs commands chrooted into root: natively for amd64, through
// qemu-aarch64-static (copied into the root, so the arm64 program and its
// libraries are the image's) for arm64. binfmt_misc is not needed.
func runner(t *testing.T, root, arch string) runFunc {
	t.Helper()
	var qemu string
	if arch == "arm64" {
		path, err := exec.LookPath("qemu-aarch64-static")
		if err != nil {
			testenv.Unavailable(t, "qemu-aarch64-static not found (Debian qemu-user-static, tests/install-deps.sh)")
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "qemu-aarch64-static"), data, 0o755); err != nil {
			t.Fatal(err)
		}
		qemu = "/qemu-aarch64-static"
	}
	return func(t *testing.T, user string, env []string, args ...string) string {
		t.Helper()
		if qemu == "" {
			return chroot(t, root, user, env, args...)
		}
		cmd := []string{qemu}
		for _, e := range env {
			cmd = append(cmd, "-E", e) // the guest's environment, not qemu's
		}
		return chroot(t, root, user, nil, append(cmd, args...)...)
	}
}

func checkWebhook(t *testing.T, c v1.Config, root, arch string, run runFunc) {
	t.Helper()
	if c.User != "65532:65532" {
		t.Errorf("user %q, want 65532:65532", c.User)
	}
	if !slices.Equal(c.Entrypoint, []string{"/webhook"}) {
		t.Errorf("entrypoint %v", c.Entrypoint)
	}
	// An empty base: the binary, the user database, nothing to execute.
	for _, p := range []string{"bin/sh", "usr", "lib"} {
		if _, err := os.Lstat(filepath.Join(root, p)); err == nil {
			t.Errorf("webhook image contains /%s", p)
		}
	}
	checkStatic(t, filepath.Join(root, "webhook"), arch)
	testenv.RequireRoot(t)
	out := run(t, "65532:65532", nil, "/webhook", "--help")
	if !strings.Contains(out, "cert-dir") {
		t.Errorf("/webhook --help as 65532 does not list --cert-dir:\n%s", out)
	}
}

func checkAgent(t *testing.T, c v1.Config, root, arch string, pkgs []string, run runFunc) {
	t.Helper()
	if c.User != "0:0" {
		t.Errorf("user %q, want 0:0 (NET_ADMIN needs root)", c.User)
	}
	if !slices.Equal(c.Entrypoint, []string{"/agent"}) {
		t.Errorf("entrypoint %v", c.Entrypoint)
	}
	for _, want := range []string{"iptables", "libc6", "libxtables12", "libnftnl11"} {
		if !slices.Contains(pkgs, want) {
			t.Errorf("packages %v lack %s", pkgs, want)
		}
	}
	for _, unwanted := range []string{"bash", "dpkg", "perl-base", "coreutils"} {
		if slices.Contains(pkgs, unwanted) {
			t.Errorf("packages include %s", unwanted)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "usr/share/doc")); err == nil {
		t.Error("documentation was not pruned")
	}
	checkStatic(t, filepath.Join(root, "agent"), arch)
	checkELF(t, filepath.Join(root, "usr/sbin/xtables-nft-multi"), arch)
	testenv.RequireRoot(t)
	// qemu-user translates no NETLINK_NETFILTER socket, so under it the nft
	// variants stop at "Failed to initialize nft: Protocol not supported"
	// after loading: the nft binary's libraries are checked with the image's
	// dynamic loader, and the legacy variant (no netlink) runs fully.
	nftVersion := "nf_tables"
	if arch == "arm64" {
		nftVersion = qemuNoNetfilter
	}
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want []string
	}{
		{"iptables --version", nil, []string{"/usr/sbin/iptables", "--version"}, []string{nftVersion}},
		{"iptables-legacy --version", nil, []string{"/usr/sbin/iptables-legacy", "--version"}, []string{"iptables v1.", "legacy"}},
		{"ip6tables-legacy --version", nil, []string{"/usr/sbin/ip6tables-legacy", "--version"}, []string{"ip6tables v1."}},
		{"nft binary's libraries", nil, []string{loaders[arch], "--list", "/usr/sbin/xtables-nft-multi"},
			[]string{"libnftnl.so.11 => /usr/lib/", "libmnl.so.0 => /usr/lib/", "libxtables.so.12 => /usr/lib/"}},
		{"agent -h", nil, []string{"/agent", "-h"}, []string{"-localip"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := run(t, "0:0", tc.env, tc.args...)
			for _, want := range tc.want {
				if !strings.Contains(out, want) {
					t.Errorf("%v printed %q, want it to contain %q", tc.args, out, want)
				}
			}
			if strings.Contains(out, "not found") {
				t.Errorf("%v: a library is missing:\n%s", tc.args, out)
			}
		})
	}
	t.Run("agent -version", func(t *testing.T) {
		if !strings.Contains(run(t, "0:0", nil, "/agent", "-h"), "-version") {
			t.Skip("the agent has no -version flag yet (issue 11 adds it); -h ran above")
		}
		if out := strings.TrimSpace(run(t, "0:0", nil, "/agent", "-version")); out == "" {
			t.Error("/agent -version printed nothing")
		} else {
			t.Logf("/agent -version: %s", out)
		}
	})
}

// loaders are the images' dynamic loaders ("--list" prints what a program
// loads, from the image's root).
var loaders = map[string]string{"amd64": "/lib64/ld-linux-x86-64.so.2", "arm64": "/lib/ld-linux-aarch64.so.1"}

// qemuNoNetfilter is what an nft program prints under qemu-user, which has
// no NETLINK_NETFILTER sockets.
const qemuNoNetfilter = "Failed to initialize nft: Protocol not supported"

// chroot runs args inside root as user (uid:gid), with env added, and returns
// the output. A non-zero exit is accepted only for help output (flag.ErrHelp
// exits 0 or 2) and for an nft program stopped by qemu-user's missing netlink
// family.
func chroot(t *testing.T, root, user string, env []string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "chroot", append([]string{"--userspec=" + user, root}, args...)...)
	cmd.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, env...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	accepted := slices.ContainsFunc(args, func(a string) bool { return a == "-h" || a == "--help" }) ||
		(args[0] == "/qemu-aarch64-static" && strings.Contains(string(out), qemuNoNetfilter))
	if err != nil && !(errors.As(err, &exit) && accepted) {
		t.Fatalf("chroot %s %v: %v\n%s", root, args, err, out)
	}
	return string(out)
}

// elfMachines are the ELF machines of the architectures.
var elfMachines = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

// checkELF fails when the file is not an ELF program for arch.
func checkELF(t *testing.T, path, arch string) *elf.File {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if f.Machine != elfMachines[arch] {
		t.Errorf("%s is for %s, want %s (%s)", path, f.Machine, elfMachines[arch], arch)
	}
	return f
}

// checkStatic fails when the binary is not for arch or has a program
// interpreter (is dynamic).
func checkStatic(t *testing.T, path, arch string) {
	t.Helper()
	f := checkELF(t, path, arch)
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s is dynamically linked", path)
		}
	}
}

// readOCITar unpacks the OCI layout tarball, which must hold one image
// index carrying the reference annotation, and returns the index's images by
// architecture.
func readOCITar(t *testing.T, r Result) map[string]v1.Image {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Open(r.OCITar)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	untar(t, f, dir)
	top, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatalf("%s is not an OCI layout: %v", r.OCITar, err)
	}
	m, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 1 {
		t.Fatalf("index.json holds %d manifests, want 1", len(m.Manifests))
	}
	d := m.Manifests[0]
	tag, _ := name.NewTag(r.Ref)
	if got := d.Annotations["org.opencontainers.image.ref.name"]; got != tag.TagStr() {
		t.Errorf("ref.name annotation %q, want %q", got, tag.TagStr())
	}
	if d.MediaType != types.OCIImageIndex {
		t.Fatalf("index.json points at a %s, want an OCI image index", d.MediaType)
	}
	if d.Digest != r.Digest {
		t.Errorf("index digest %s, Build reported %s", d.Digest, r.Digest)
	}
	idx, err := top.ImageIndex(d.Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	imgs := map[string]v1.Image{}
	for _, desc := range im.Manifests {
		if desc.Platform == nil || desc.Platform.OS != "linux" {
			t.Fatalf("index entry %s has platform %v", desc.Digest, desc.Platform)
		}
		img, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		imgs[desc.Platform.Architecture] = img
	}
	return imgs
}

// checkDockerTar loads the docker tarball and compares it with img.
func checkDockerTar(t *testing.T, r Result, img v1.Image) {
	t.Helper()
	tag, err := name.NewTag(r.Ref)
	if err != nil {
		t.Fatal(err)
	}
	dimg, err := tarball.ImageFromPath(r.DockerTar, &tag)
	if err != nil {
		t.Fatalf("%s: %v", r.DockerTar, err)
	}
	want, _ := img.ConfigName()
	if got, err := dimg.ConfigName(); err != nil || got != want {
		t.Errorf("docker tarball config %s (%v), want %s", got, err, want)
	}
}

func mustLayers(t *testing.T, img v1.Image) []v1.Layer {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

// extract writes the flattened file system of img into a new directory.
func extract(t *testing.T, img v1.Image) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil { // "/" for the non-root user
		t.Fatal(err)
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	untar(t, rc, dir)
	return dir
}

// untar unpacks a tar stream into dir (regular files, directories, symlinks,
// hard links), refusing paths that leave dir.
func untar(t *testing.T, r io.Reader, dir string) {
	t.Helper()
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("tar: %v", err)
		}
		p := filepath.Join(dir, filepath.Clean("/"+hdr.Name))
		if !strings.HasPrefix(p, dir) {
			t.Fatalf("tar entry %q leaves the directory", hdr.Name)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, os.FileMode(hdr.Mode).Perm()|0o700); err != nil {
				t.Fatal(err)
			}
			_ = os.Chmod(p, os.FileMode(hdr.Mode).Perm()|os.FileMode(hdr.Mode)&os.ModeSticky)
		case tar.TypeSymlink:
			_ = os.Remove(p)
			if err := os.Symlink(hdr.Linkname, p); err != nil {
				t.Fatal(err)
			}
		case tar.TypeLink:
			_ = os.Remove(p)
			if err := os.Link(filepath.Join(dir, filepath.Clean("/"+hdr.Linkname)), p); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			f, err := os.OpenFile(p, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, os.FileMode(hdr.Mode).Perm())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(f, tr); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	_ = filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			n += info.Size()
		}
		return nil
	})
	return n
}
