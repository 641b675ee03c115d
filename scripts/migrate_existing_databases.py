#!/usr/bin/env python3
"""Migrate existing (legacy) databases into a DB_ROOT, losing nothing.

The same command as ``plandb migrate-legacy`` (see its --help): ::

    scripts/migrate_existing_databases.py --db-root /srv/planner/db --legacy-dir /srv/planner \\
        [--dry-run] [--json] [--redact]
"""

from plandb.cli_legacy import main

if __name__ == "__main__":
    main()
