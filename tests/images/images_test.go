package images

import (
	"archive/tar"
	"context"
	"debug/elf"
	"errors"
	"io"
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

// TestBuildImages builds both images from this checkout (the agent's Debian
// packages taken from the ones installed here, offline), reads the tarballs
// back, checks the image configuration and the file systems, and (as root)
// runs the binaries chrooted into the extracted root file systems.
func TestBuildImages(t *testing.T) {
	for _, tool := range []string{"go", "apt-cache", "dpkg-query"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Unavailable(t, tool+" not found")
		}
	}
	if err := exec.Command("dpkg-query", "-W", "iptables").Run(); err != nil {
		testenv.Unavailable(t, "iptables package not installed (tests/install-deps.sh)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out := t.TempDir()
	start := time.Now()
	results, err := Build(ctx, Options{Out: out, Repo: testenv.RepoRoot(), Version: "v0.0.0-test", Revision: "abc123", Source: SourceInstalled})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	t.Logf("built %d images in %s", len(results), time.Since(start).Round(time.Millisecond))
	if len(results) != 2 {
		t.Fatalf("want 2 images, got %d", len(results))
	}
	for _, r := range results {
		t.Run(r.Name, func(t *testing.T) {
			img := readOCITar(t, r)
			checkDockerTar(t, r, img)
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			c := cf.Config
			if cf.OS != "linux" || cf.Architecture != "amd64" {
				t.Errorf("platform %s/%s", cf.OS, cf.Architecture)
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
			t.Logf("%s: %d layers, %.1f MiB unpacked, digest %s", r.Ref, len(mustLayers(t, img)), float64(size)/(1<<20), r.Digest)
			switch r.Name {
			case "webhook":
				checkWebhook(t, c, root)
			case "agent":
				checkAgent(t, c, root, r.Packages)
			default:
				t.Fatalf("unexpected image %q", r.Name)
			}
		})
	}
}

func checkWebhook(t *testing.T, c v1.Config, root string) {
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
	checkStatic(t, filepath.Join(root, "webhook"))
	if os.Geteuid() != 0 {
		testenv.RequireRoot(t)
	}
	out := chroot(t, root, "65532:65532", "/webhook", "--help")
	if !strings.Contains(out, "cert-dir") {
		t.Errorf("/webhook --help as 65532 does not list --cert-dir:\n%s", out)
	}
}

func checkAgent(t *testing.T, c v1.Config, root string, pkgs []string) {
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
	checkStatic(t, filepath.Join(root, "agent"))
	testenv.RequireRoot(t)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"iptables (nft)", []string{"/usr/sbin/iptables", "--version"}, "nf_tables"},
		{"iptables-legacy", []string{"/usr/sbin/iptables-legacy", "--version"}, "legacy"},
		{"ip6tables", []string{"/usr/sbin/ip6tables-nft", "--version"}, "ip6tables v"},
		{"agent help", []string{"/agent", "-h"}, "-localip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := chroot(t, root, "0:0", tc.args...)
			if !strings.Contains(out, tc.want) {
				t.Errorf("%v printed %q, want it to contain %q", tc.args, out, tc.want)
			}
		})
	}
}

// chroot runs args inside root as user (uid:gid) and returns the output. A
// non-zero exit is accepted only for help output (flag.ErrHelp exits 0 or 2).
func chroot(t *testing.T, root, user string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "chroot", append([]string{"--userspec=" + user, root}, args...)...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && slices.ContainsFunc(args, func(a string) bool { return a == "-h" || a == "--help" })) {
		t.Fatalf("chroot %s %v: %v\n%s", root, args, err, out)
	}
	return string(out)
}

// checkStatic fails when the binary has a program interpreter (is dynamic).
func checkStatic(t *testing.T, path string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s is dynamically linked", path)
		}
	}
}

// readOCITar unpacks the OCI layout tarball and returns its one image, which
// must carry the reference annotation.
func readOCITar(t *testing.T, r Result) v1.Image {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Open(r.OCITar)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	untar(t, f, dir)
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatalf("%s is not an OCI layout: %v", r.OCITar, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 1 {
		t.Fatalf("OCI index holds %d manifests, want 1", len(m.Manifests))
	}
	tag, _ := name.NewTag(r.Ref)
	if got := m.Manifests[0].Annotations["org.opencontainers.image.ref.name"]; got != tag.TagStr() {
		t.Errorf("ref.name annotation %q, want %q", got, tag.TagStr())
	}
	img, err := idx.Image(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := img.Digest(); d != r.Digest {
		t.Errorf("OCI image digest %s, want %s", d, r.Digest)
	}
	return img
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
