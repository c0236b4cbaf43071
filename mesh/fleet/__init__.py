"""Fleets (pure): one config change rolled over many stacks (one cluster each) in waves, with health gates.

`fleet_file` reads the fleet file; `waves` resolves its stack patterns against the project's stacks; `gates`
judges a stack's health from what was read of its cluster; `report` says what a run did and where it stopped.
The Automation API runs and the cluster reads that feed them are `mesh.fleet_run`'s.
"""
