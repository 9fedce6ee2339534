"""The project package as an app, so that its system checks are registered wherever Django starts."""

from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "byok_portal"
    verbose_name = "BYOK Portal"

    def ready(self) -> None:
        # Imported for its side effect: registers the start-up checks.
        from byok_portal import checks  # noqa: F401
