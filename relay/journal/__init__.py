"""The on-disk journal: accepted entries survive a kill -9 until every sink has them."""

from relay.journal.journal import Journal, JournalError, unacknowledged

__all__ = ["Journal", "JournalError", "unacknowledged"]
