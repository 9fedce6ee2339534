from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts and identity"

    def ready(self) -> None:
        # A rename is audited by the services layer; the model only announces it.
        from accounts.models import user_renamed
        from accounts.services import record_rename

        user_renamed.connect(record_rename, dispatch_uid="accounts.record_rename")
