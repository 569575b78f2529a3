"""The order service: prices orders from the product service, then places each with a
saga: reserves its stock in the inventory service, charges the payment service, ships
with the shipping service, and undoes the done steps when one fails.

Run one instance with `python -m services.order`.
"""
