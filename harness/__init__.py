"""The local harness: everything that runs this project's program and a real cluster on one machine.

Used by the end-to-end tests, ``scripts/preview`` and the benchmarks, and imported like any other code
(run from the repository root):

* ``toolchain`` - where the tools built by ``toolchain/`` are, at the versions of ``toolchain/versions``;
* ``control_plane`` - a throwaway Kubernetes control plane (etcd, apiserver, controllers, KWOK nodes),
  built from ``pki`` (its CA and certificates) and ``processes`` (its child processes);
* ``injector`` and ``connect_proxy`` - the stand-in for istiod's webhooks and the apiserver egress
  that reaches it;
* ``fake_revision`` - what an istiod revision leaves in a cluster, without istiod, for harness checks;
* ``mesh_stack`` - a stack of the real program, driven through the Automation API with a local backend;
* ``simulation`` - the program run under Pulumi mocks, for simulated previews without an engine.
"""
