// Command etcd is the real etcd server, built from the Go module proxy so that
// integration tests can start a kube-apiserver without downloaded binaries.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
