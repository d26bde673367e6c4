"""``python -m backfill_core`` runs the ``backfill`` command."""

from backfill_core.app.cli import main

main()
