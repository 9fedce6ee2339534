from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("keys", "0001_initial"),
    ]

    operations = [
        migrations.AlterField(
            model_name="key",
            name="kms_state",
            field=models.CharField(
                choices=[
                    ("ENABLED", "Enabled"),
                    ("DISABLED", "Disabled"),
                    ("EMPTY", "No key material"),
                    ("PENDING_DELETION", "Pending deletion"),
                    ("MISSING", "No KMS key"),
                    ("UNKNOWN", "Unknown"),
                ],
                default="UNKNOWN",
                max_length=20,
            ),
        ),
    ]
