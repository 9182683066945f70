// Command pilot-discovery is upstream's pilot/cmd/pilot-discovery (istiod), built as a module of our own
// so the end-to-end tests run the real istiod against the test apiserver (DESIGN.md section 11).
package main

import (
	"os"

	"istio.io/istio/pilot/cmd/pilot-discovery/app"
	"istio.io/istio/pkg/log"
)

func main() {
	log.EnableKlogWithCobra()
	rootCmd := app.NewRootCommand()
	if err := rootCmd.Execute(); err != nil {
		log.Error(err)
		os.Exit(-1)
	}
}
