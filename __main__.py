"""istio-mesh: Istio revisions, tags, gateways and namespace bindings as stack config."""

import pulumi

from mesh.program import deploy, read_config, spec_from_config

deploy(spec_from_config(read_config(pulumi.Config())))
