"""The product service: the catalogue of what can be sold and at what price.

Run one instance with `python -m services.product`.
"""
