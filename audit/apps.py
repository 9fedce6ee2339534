from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"

    def ready(self) -> None:
        from byok_portal import metrics

        from .models import AuditHead

        def head_sequence() -> float | None:
            seq = AuditHead.objects.filter(pk=1).values_list("seq", flat=True).first()
            return None if seq is None else float(seq)

        metrics.register_scrape_gauge(
            "byok_audit_head_sequence", "Sequence number of the newest audit event (the chain's head).", head_sequence
        )
