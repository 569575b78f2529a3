"""The shipping service: a simulated carrier that ships orders' items to an address and
reports where each shipment stands.

Run an instance with `python -m services.shipping`; several instances share one
database file. A shipment's status is a function of time (see services.shipping.domain),
so the instances agree on it without any of them running a clock of its own.
"""
