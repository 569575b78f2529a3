"""ShopMesh benchmarks: throughput and latency as ratios against a baseline measured in
the same run, with the same load (`python -m bench`, or `make bench`)."""
