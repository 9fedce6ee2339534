from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"

    def ready(self) -> None:
        # The services create jobs; the task module imports the services, so the task is handed down here.
        from jobs import services, tasks

        services.start_lanes_with(tasks.start_lane)
