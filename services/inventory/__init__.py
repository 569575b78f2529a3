"""The inventory service: stock levels and the reservations orders hold on them.

Run an instance with `python -m services.inventory`; several instances share one
database file, so every rule that spans rows is applied inside one SQLite transaction.
"""
