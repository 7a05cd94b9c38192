// Command build writes the webhook and agent images as OCI and docker-load
// tarballs without a Docker engine (`make images`), each an OCI image index
// over linux/amd64 and linux/arm64:
//
//	go run ./tests/images/build -out bin/images
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"

	"github.com/nodelocaldns/nodelocaldns/tests/images"
	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	out := fs.String("out", "bin/images", "directory for the image tarballs")
	version := fs.String("version", "dev", "image tag and version label")
	debs := fs.String("debs", "", "cache of downloaded .deb files (default OUT/debs)")
	platforms := fs.String("platforms", strings.Join(images.DefaultPlatforms, ","), "comma-separated platforms of the image indexes; the first goes into the docker tarballs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	repo := testenv.RepoRoot()
	rev := ""
	if b, err := exec.Command("git", "-C", repo, "rev-parse", "HEAD").Output(); err == nil {
		rev = strings.TrimSpace(string(b))
	}
	results, err := images.Build(ctx, images.Options{
		Out: *out, Repo: repo, Version: *version, Revision: rev, DebCache: *debs, Log: os.Stdout,
		Platforms: strings.Split(*platforms, ","),
	})
	if err != nil {
		return err
	}
	for _, r := range results {
		fmt.Printf("built %s (index %s", r.Ref, r.Digest)
		for _, p := range r.Platforms {
			fmt.Printf(", linux/%s %s", p.Arch, p.Digest)
		}
		fmt.Println(")")
	}
	return nil
}
