from django.apps import AppConfig


class KeysConfig(AppConfig):
    name = "keys"

    def ready(self) -> None:
        # A create whose CreateKey was retried asks for its keystore's KMS scan (a Celery task);
        # the task module imports the services, so the services are handed the task from here.
        from keys import services, tasks

        services.scan_keystores_with(tasks.scan_keystore_soon)
