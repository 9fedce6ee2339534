"""The one lock that makes the sandbox's in-memory AWS state safe to share between threads."""

import threading

# moto's backends are plain dicts without locking, and the sandbox serves requests on
# several threads. Every AWS call and every /_sandbox/ request runs under this lock, so
# each one sees and leaves a consistent state (as AWS does per key). Re-entrant because
# the KMS wrapper and the call counter both take it on the same request.
SANDBOX_LOCK = threading.RLock()
