from django.apps import AppConfig


class KeysConfig(AppConfig):
    name = "keys"

    def ready(self) -> None:
        # The audit trail sits below keys: the names its page offers as filters are read here.
        from audit.selectors import name_filters_by
        from keys.selectors import audit_filter_names

        name_filters_by(audit_filter_names)
