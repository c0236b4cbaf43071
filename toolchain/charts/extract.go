// Command extract writes Istio's Helm charts, exactly as embedded in the istio.io/istio
// module version this module pins (package istio.io/istio/manifests, the embed.FS istioctl
// itself installs from), into a directory: <out>/base, <out>/istiod, <out>/gateway, <out>/cni.
// Used by toolchain/build-charts.sh; no network at run time.
package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"istio.io/istio/manifests"
)

// charts maps the output directory name to the chart's path inside the embedded FS.
var charts = map[string]string{
	"base":    "charts/base",
	"istiod":  "charts/istio-control/istio-discovery",
	"gateway": "charts/gateway",
	"cni":     "charts/istio-cni",
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: extract <output-dir>")
		os.Exit(2)
	}
	out := os.Args[1]
	for name, src := range charts {
		if err := copyTree(src, filepath.Join(out, name)); err != nil {
			fmt.Fprintf(os.Stderr, "extract %s: %v\n", src, err)
			os.Exit(1)
		}
	}
}

func copyTree(src, dst string) error {
	return fs.WalkDir(manifests.FS, src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := fs.ReadFile(manifests.FS, path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
}
