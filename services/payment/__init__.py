"""The payment service: a simulated payment processor that charges customers for their
orders and refunds them, idempotently by a key the caller chooses.

Run an instance with `python -m services.payment`; several instances share one
database file, and each charge or refund is one SQLite write transaction, which is what
makes a key hold when retries of one call arrive at two instances at once.
"""
