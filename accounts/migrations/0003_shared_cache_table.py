"""The table of the default cache (``CACHE_URL=db://``, the default): throttle counters shared by every process.

Created whatever CACHE_URL says now, so switching to ``db://`` later needs no
``createcachetable`` step. Django's own command does the work (same schema).
"""

from typing import Any

from django.core.management.commands.createcachetable import Command as CreateCacheTable
from django.db import migrations

TABLE = "byok_cache"


def create_table(apps: Any, schema_editor: Any) -> None:
    # Skips the table when it exists already (e.g. made by createcachetable by hand).
    command = CreateCacheTable()
    command.verbosity = 0
    command.create_table(schema_editor.connection.alias, TABLE, dry_run=False)


def drop_table(apps: Any, schema_editor: Any) -> None:
    schema_editor.execute(f"DROP TABLE IF EXISTS {schema_editor.quote_name(TABLE)}")


class Migration(migrations.Migration):
    dependencies = [("accounts", "0002_fixed_local_subjects")]

    operations = [migrations.RunPython(create_table, drop_table)]
