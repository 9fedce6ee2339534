"""WSGI entry point (gunicorn byok_portal.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "byok_portal.settings")
application = get_wsgi_application()

from byok_portal.checks import refuse_to_start_if_misconfigured  # noqa: E402 - needs the apps loaded above

refuse_to_start_if_misconfigured()
