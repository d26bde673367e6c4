"""Helpers shared by the test suite, each written once; the fixtures that hand them out live in
the ``conftest.py`` files. ``tests`` is on pytest's ``pythonpath``, so a test imports them as
``from support.sqlite import query``.

- ``cli``: the real ``backfill`` console script run as a subprocess, its environment and output.
- ``processes``: background ``backfill`` processes, their stop points and their children.
- ``sqlite``: read-only reads of SQLite files.
- ``db``: reads and hand-made writes on a SQLite file or a ``Backend`` of either kind.
- ``ledger``: the run ledger (``backfill_runs``, ``backfill_errors``) read and written by hand.
- ``postgres``: scratch databases on the PostgreSQL test server.
- ``backends``: one small database built alike on SQLite or PostgreSQL.
- ``builtin_job``: the built-in job's synthetic databases, their tables and what a run must make.
- ``consistency``: what a database must look like after a run died at any point.
- ``crash``: the crash tests' toolbox, handed out by the ``crash`` fixture.
- ``plugins``: fixture plugin packages installed with pip.
- ``once``: files made once per test run and shared by pytest-xdist's workers.
- ``benchmarks``: the scripts of ``benchmarks/`` loaded as modules.
- ``kit_examples``: extractors the testing kit's tests share.
"""
