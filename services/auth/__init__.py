"""The auth service: users, their passwords, and the RS256 tokens the edge accepts.

Run one instance with `python -m services.auth`.
"""
