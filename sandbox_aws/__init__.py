"""Sandbox AWS: an AWS-compatible STS + KMS endpoint for development and tests.

Built on moto's server mode, extended to do what AWS documents for KMS keys with
imported key material (see :mod:`sandbox_aws.kms`) and for role trust policies with an
``sts:ExternalId`` condition (see :mod:`sandbox_aws.sts`). Start it with
``python -m sandbox_aws`` or, in tests, with :class:`sandbox_aws.server.SandboxServer`.
"""
