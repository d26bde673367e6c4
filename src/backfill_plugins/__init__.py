"""Plugins that ship with backfill; they load through the same entry points as any other."""
