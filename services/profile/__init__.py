"""The profile service: users' public profiles, a read model (the query side of CQRS)
kept as a projection of the user service's events on topic "user", in its own SQLite
file, and rebuilt from the broker's log on request.

Run one instance with `python -m services.profile`.
"""
