"""ShopMesh's runtime: what every process of the mesh shares.

Subpackages, lowest first (a module imports only those above it in this list):
config, errors, problems, identity, authz, deadline, backoff -> registry -> telemetry
-> client -> server -> supervisor -> cli. Nothing here imports services/ or gateway/.
"""
