"""Domain primitives every service shares: the kinds of ids and their limits, and paging.

Not a service (nothing runs it) and not the runtime (mesh/ knows no domain): services
import it so that an id means the same, and is refused with the same words, everywhere.
"""
