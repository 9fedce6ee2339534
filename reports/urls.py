"""Report pages, mounted at ``/reports/``."""

from django.urls import path

from reports import views

app_name = "reports"

urlpatterns = [
    path("", views.index, name="index"),
    path("<slug:kind>/download/", views.download, name="download"),
]
