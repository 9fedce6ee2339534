from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"

    def ready(self) -> None:
        # The audit trail sits below notifications: its after-commit hook is handed in from here, so
        # every audited operation (whoever adds it) can become a notification without knowing about them.
        from audit.services import after_commit_call
        from notifications import services, tasks

        after_commit_call(services.on_audit_events)
        services.queue_with(fan_out=tasks.queue_fan_out, delivery=tasks.queue_delivery)
