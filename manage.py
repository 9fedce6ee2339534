#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    # In a `make run` checkout, the operator commands use the portal's development
    # settings; never where the environment configures a deployment (byok_portal.devenv).
    if "DJANGO_SETTINGS_MODULE" not in os.environ:
        from byok_portal import devenv

        recorded = devenv.apply_for_manage_py()
        if recorded is not None:
            print(f"manage.py: development settings of `make run` from {recorded}", file=sys.stderr)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "byok_portal.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
