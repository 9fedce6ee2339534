from django.apps import AppConfig


class KeysConfig(AppConfig):
    name = "keys"

    def ready(self) -> None:
        # The audit trail sits below keys: the names its page offers as filters are read here.
        from audit.selectors import name_filters_by
        from byok_portal.unexpected import record_unexpected_with
        from keys import services, tasks
        from keys.selectors import audit_filter_names
        from keys.unexpected import audit_unexpected_error

        name_filters_by(audit_filter_names)
        # The kernel's API exception handler and page middleware meet unexpected errors; auditing one
        # names the person, writes the trail and attaches the key, so the recorder is handed down from here.
        record_unexpected_with(audit_unexpected_error)
        # A create whose CreateKey was retried asks for its keystore's KMS scan (a Celery task);
        # the task module imports the services, so the services are handed the task from here.
        services.scan_keystores_with(tasks.scan_keystore_soon)
