"""The order service: prices orders from the product service and holds their stock in
the inventory service.

Run one instance with `python -m services.order`.
"""
