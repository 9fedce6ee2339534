from django.apps import AppConfig


class KeystoresConfig(AppConfig):
    name = "keystores"
