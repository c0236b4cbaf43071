"""The local harness: everything that runs this project's program and a real cluster on one machine.

Used by the end-to-end tests, ``scripts/preview`` and the benchmarks, and imported like any other code
(run from the repository root):

* ``toolchain`` - where the tools built by ``toolchain/`` are, at the versions of ``toolchain/versions``;
* ``control_plane`` - a throwaway Kubernetes control plane (etcd, apiserver, controllers, KWOK nodes),
  built from ``pki`` (its CA and certificates) and ``processes`` (its child processes);
* ``istiod`` - a real istiod (``pilot-discovery``) per installed revision, started from its Deployment;
* ``connect_proxy`` - the apiserver's egress, routing an istiod Service to its local istiod;
* ``admission_log`` - every pod create and the webhooks that changed it, from the apiserver's audit log;
* ``revision`` - a revision installed as ``helm install`` does, for tests that do not run the program;
* ``istio_checks`` - the independent checks with the real ``istioctl`` (analyze, tag list, precheck);
* ``mesh_stack`` - a stack of the real program, driven through the Automation API with a local backend;
* ``simulation`` - the program run under Pulumi mocks, for simulated previews without an engine.
"""
