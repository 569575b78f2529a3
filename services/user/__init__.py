"""The user service: users' profiles, event-sourced (every change an event in the
user's stream, a user the replay of their stream), with optimistic concurrency. Its
events are published on topic "user" (a transactional outbox in the event store).

Run one instance with `python -m services.user`.
"""
