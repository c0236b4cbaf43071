// Command pulumi-resource-kubernetes serves the Pulumi Kubernetes provider.
//
// Upstream's cmd/pulumi-resource-kubernetes embeds schema-embed.json and
// terraform-mapping-embed.json, which are generated at release time and are not in the module
// zip. build-pulumi.sh generates both beside this file (in a scratch copy of this module) from
// the provider module's committed schema.json / terraform-mapping.json, with the version
// stamped into the schema, and then builds this package.
package main

import (
	_ "embed"
	"fmt"
	"os"

	"github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/provider"
	"github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version"
)

//go:embed schema-embed.json
var pulumiSchema []byte

//go:embed terraform-mapping-embed.json
var terraformMapping []byte

func main() {
	// Lets build-pulumi.sh check what a cached binary is (the engine never passes this flag).
	if len(os.Args) == 2 && os.Args[1] == "-version" {
		fmt.Println(version.Version)
		return
	}
	provider.Serve("kubernetes", version.Version, pulumiSchema, terraformMapping)
}
