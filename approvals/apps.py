from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"
    verbose_name = "Dual control approvals"

    def ready(self) -> None:
        # Every covered operation asks the kernel's gate (keys.operations, keystores.services); the gate that
        # decides — the keystore's approval policy — lives here, above the apps it guards.
        from approvals import services, tasks
        from byok_portal import dual_control

        dual_control.gate_with(services.gate)
        # The services module is imported by the tasks module, so the task is handed to it from here.
        services.run_with(tasks.execute_soon)
