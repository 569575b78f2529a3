"""The notification service: what the shop tells each user, made from the domain events
of user, order and payment, stored per user and streamed to those who watch.

Run an instance with `python -m services.notification`; several instances share one
database file, and each event's notification is written once, with the record that
the event was handled, whichever instance the bus hands it to.
"""
