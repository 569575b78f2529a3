"""The audit service: every domain event the shop publishes, kept once each in an
append-only log, and queried by stream, topic, type and time.

Run an instance with `python -m services.audit`; several instances share one database
file, and each event is appended once, whichever instance the bus hands it to.
"""
