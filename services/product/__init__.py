"""The product service: the catalogue of what can be sold and at what price. Each
product created is published as a ProductCreated event on topic "product" (through
the store's outbox), which is how inventory and the catalog learn of it.

Run one instance with `python -m services.product`.
"""
