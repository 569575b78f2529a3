"""ShopMesh's runtime: what every process of the mesh shares.

Modules, lowest first; each imports only from its own layer and those before it
(tests/unit/mesh/test_layers.py checks this):
errors, inbound, backoff, tasks, codegen, process -> problems, config, state, storage ->
identity, authz -> registry -> events -> envoy -> telemetry -> client -> xds -> server ->
supervisor -> cli.
Nothing here imports services/ or gateway/.
"""
