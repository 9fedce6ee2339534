from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"

    def ready(self) -> None:
        # The audit trail sits below notifications: its after-commit hook is handed in from here, so
        # every audited operation (whoever adds it) can become a notification without knowing about them.
        from audit.services import after_commit_call
        from keys.jobs.kek import reseal_also
        from notifications import services, tasks

        after_commit_call(services.on_audit_events)
        # Webhook secrets are sealed under the software KEK: a KEK rotation must re-seal them too.
        reseal_also("webhook signing", services.reseal_secrets)
        services.queue_with(fan_out=tasks.queue_fan_out, delivery=tasks.queue_delivery)
