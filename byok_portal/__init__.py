"""BYOK Portal: a Bring-Your-Own-Key portal for AWS KMS."""

from byok_portal.celery import app as celery_app

__all__ = ("celery_app",)
