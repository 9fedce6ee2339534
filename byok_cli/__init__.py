"""``byok``: the BYOK Portal's command line, a client of its REST API only (SPEC §13).

Installed with the repository (``pip install .``, entry point ``byok``); it imports
nothing of the portal's server code, so it runs on any machine that can reach the API.
"""

__version__ = "0.1.0"
