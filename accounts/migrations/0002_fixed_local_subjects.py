"""Give every local account its fixed subject: the username it has now (SPEC §3).

Existing audit events and pending download preparations name local accounts as
``("local", username)``; taking today's username as the subject keeps them pointing
at the same person. From here on a rename changes the username only.
"""

from typing import Any

from django.db import migrations


def fix_local_subjects(apps: Any, schema_editor: Any) -> None:
    User = apps.get_model("accounts", "User")
    for user in User.objects.filter(oidc_subject="").only("pk", "username"):
        User.objects.filter(pk=user.pk).update(oidc_issuer="local", oidc_subject=user.username)


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_initial")]

    operations = [migrations.RunPython(fix_local_subjects, migrations.RunPython.noop)]
