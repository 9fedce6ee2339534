"""The Django admin for platform admins: staff with a verified OTP device only (django-otp)."""

from django_otp.admin import OTPAdminSite


class PortalAdminSite(OTPAdminSite):
    site_header = "BYOK Portal administration"
    site_title = "BYOK Portal admin"


admin_site = PortalAdminSite(name="admin")
