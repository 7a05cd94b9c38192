// Command imagebuild writes the e2e node's extra images as `docker load`
// tarballs that `ctr images import` reads: the pod sandbox (pause), CoreDNS
// (the binary `make coredns` built) and the test client (glibc getent, dig
// and dnsperf as Debian installed them on this machine, with the libraries
// ldd names, and a static busybox for the shell).
//
//	go run ./tests/e2e/imagebuild -out bin/e2e/images -pause bin/e2e/pause -coredns bin/coredns
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Image references (the e2e scripts and manifests use the same names).
const (
	PauseRef   = "localhost/nodelocaldns-e2e/pause:1"
	CoreDNSRef = "localhost/nodelocaldns-e2e/coredns:v1.13.2"
	ClientRef  = "localhost/nodelocaldns-e2e/client:1"
)

// clientTools are the programs of the client image, found on this machine.
var clientTools = []string{"/usr/bin/getent", "/usr/bin/dig", "/usr/bin/dnsperf"}

// busybox is Debian's busybox-static: the client image's sh, sleep, cat.
const busybox = "/bin/busybox"

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "imagebuild:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("imagebuild", flag.ContinueOnError)
	out := fs.String("out", "bin/e2e/images", "directory for the image tarballs")
	pause := fs.String("pause", "", "static pause binary")
	coredns := fs.String("coredns", "", "CoreDNS binary")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *pause == "" || *coredns == "" {
		return errors.New("-pause and -coredns are required")
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	pauseFiles := []entry{{path: "pause", mode: 0o755, src: *pause}}
	if err := write(filepath.Join(*out, "pause.tar"), PauseRef, pauseFiles, []string{"/pause"}); err != nil {
		return err
	}
	dnsFiles := []entry{
		{path: "coredns", mode: 0o755, src: *coredns},
		{path: "etc/coredns", dir: true, mode: 0o755},
		{path: "tmp", dir: true, mode: 0o1777},
	}
	if err := write(filepath.Join(*out, "coredns.tar"), CoreDNSRef, dnsFiles, []string{"/coredns"}); err != nil {
		return err
	}
	client, err := clientFiles()
	if err != nil {
		return err
	}
	return write(filepath.Join(*out, "client.tar"), ClientRef, client, []string{"/bin/sh"})
}

// entry is one file, directory or symlink of a layer.
type entry struct {
	path string
	mode int64
	dir  bool
	link string // symlink target
	src  string // file to copy (symlinks followed)
	data []byte
}

// clientFiles lists the client image: busybox and its applets, the tools
// and every library ldd names for them, and the files glibc's resolver reads.
func clientFiles() ([]entry, error) {
	files := []entry{
		{path: "bin", dir: true, mode: 0o755},
		{path: "tmp", dir: true, mode: 0o1777},
		{path: "etc", dir: true, mode: 0o755},
		{path: "etc/passwd", mode: 0o644, data: []byte("root:x:0:0:root:/root:/bin/sh\n")},
		{path: "etc/group", mode: 0o644, data: []byte("root:x:0:\n")},
		{path: "etc/nsswitch.conf", mode: 0o644, data: []byte("hosts: files dns\n")},
		{path: "bin/busybox", mode: 0o755, src: busybox},
	}
	for _, applet := range []string{"sh", "sleep", "cat", "echo", "grep", "ls", "ps", "kill", "date", "seq", "wc", "head", "tail", "sed", "awk", "timeout", "env"} {
		files = append(files, entry{path: "bin/" + applet, link: "busybox"})
	}
	libs := map[string]bool{}
	for _, tool := range clientTools {
		files = append(files, entry{path: strings.TrimPrefix(tool, "/"), mode: 0o755, src: tool})
		deps, err := ldd(tool)
		if err != nil {
			return nil, err
		}
		for _, d := range deps {
			libs[d] = true
		}
	}
	var sorted []string
	for l := range libs {
		sorted = append(sorted, l)
	}
	sort.Strings(sorted)
	for _, l := range sorted {
		files = append(files, entry{path: strings.TrimPrefix(l, "/"), mode: 0o755, src: l})
	}
	return files, nil
}

var lddPath = regexp.MustCompile(`(?m)(?:=>\s*)?(/\S+)\s+\(0x`)

// ldd returns the absolute paths of the shared libraries bin loads.
func ldd(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w: %s", bin, err, out)
	}
	var libs []string
	for _, m := range lddPath.FindAllStringSubmatch(string(out), -1) {
		libs = append(libs, m[1])
	}
	if len(libs) == 0 {
		return nil, fmt.Errorf("ldd %s: no libraries in %q", bin, out)
	}
	return libs, nil
}

// write builds a one-layer image of files and writes it as a docker tarball.
func write(path, ref string, files []entry, entrypoint []string) error {
	layerTar, err := tarOf(files)
	if err != nil {
		return fmt.Errorf("%s: %w", ref, err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return fmt.Errorf("%s: layer: %w", ref, err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return fmt.Errorf("%s: %w", ref, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("%s: %w", ref, err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Created = v1.Time{Time: epoch}
	cf.Config = v1.Config{
		Entrypoint: entrypoint,
		Env:        []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
		WorkingDir: "/",
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return fmt.Errorf("%s: %w", ref, err)
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		return err
	}
	if err := tarball.WriteToFile(path, tag, img); err != nil {
		return fmt.Errorf("%s: write %s: %w", ref, path, err)
	}
	fmt.Printf("imagebuild: %s -> %s\n", ref, path)
	return nil
}

// tarOf writes files (with their parent directories) as a layer tar.
func tarOf(files []entry) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	var addDir func(string) error
	addDir = func(d string) error {
		if d == "." || d == "/" || dirs[d] {
			return nil
		}
		if err := addDir(filepath.Dir(d)); err != nil {
			return err
		}
		dirs[d] = true
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: epoch})
	}
	for _, f := range files {
		if err := addDir(filepath.Dir(f.path)); err != nil {
			return nil, err
		}
		h := &tar.Header{Name: f.path, Mode: f.mode, ModTime: epoch}
		var data []byte
		switch {
		case f.dir:
			if dirs[f.path] {
				continue
			}
			dirs[f.path] = true
			h.Typeflag, h.Name = tar.TypeDir, f.path+"/"
		case f.link != "":
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, f.link, 0o777
		case f.src != "":
			b, err := os.ReadFile(f.src)
			if err != nil {
				return nil, err
			}
			data = b
		default:
			data = f.data
		}
		if !f.dir && f.link == "" {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
