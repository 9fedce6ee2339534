"""``python -m byok_cli``: the same as the ``byok`` command."""

from byok_cli.main import main

main()
