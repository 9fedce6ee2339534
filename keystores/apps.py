from django.apps import AppConfig


class KeystoresConfig(AppConfig):
    name = "keystores"

    def ready(self) -> None:
        # The audit trail sits below keystores; who may read which keystores' events is decided here.
        from audit.selectors import scope_events_by
        from keystores.selectors import audit_scope

        scope_events_by(audit_scope)
