"""WSGI entry point (gunicorn byok_portal.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "byok_portal.settings")
application = get_wsgi_application()
