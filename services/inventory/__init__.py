"""The inventory service: stock levels and the reservations orders hold on them, for
the products it learns of from product's events (topic "product"); each stock change
is published as a StockChanged event on topic "inventory".

Run an instance with `python -m services.inventory`; several instances share one
database file, so every rule that spans rows is applied inside one SQLite transaction.
"""
