// Command etcd is upstream's etcd server main, built as a module of our own so the end-to-end tests
// run a real etcd (DESIGN.md section 11).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
