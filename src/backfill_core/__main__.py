"""``python -m backfill_core`` runs the ``backfill`` command."""

from backfill_core.cli import main

main()
