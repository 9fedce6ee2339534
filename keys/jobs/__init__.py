"""The portal's background work on keys, one module per job: ``cleanup``, ``reconcile``, ``expiry``, ``kek``.

Celery tasks (:mod:`keys.tasks`) and the management commands are thin callers of
these. Every job is idempotent, because tasks run with ``acks_late`` and may be
delivered twice, and may run in two workers at once.
"""
