"""Distributed runs: an extractor's key ranges as jobs on procrastinate's queue, kept in the
target PostgreSQL database, processed by ``backfill worker`` on any number of machines.

``queue.py`` holds what touches procrastinate, ``jobs.py`` what a job does, ``commands.py`` the
``enqueue`` and ``worker`` commands; the parts' ledger table is ``store/parts.py``'s.
"""
