"""The catalog service: what the shop sells, with price and stock, searchable. A read
model (the query side of CQRS) built from product's events (topic "product") and
inventory's (topic "inventory") in its own database, which its instances share.

Run an instance with `python -m services.catalog`.
"""
