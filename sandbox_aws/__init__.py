"""Sandbox AWS: an AWS-compatible STS + KMS endpoint for development and tests.

Built on moto's server mode, extended to do what AWS documents for KMS keys with
imported key material (see :mod:`sandbox_aws.kms`) and for AssumeRole, which only
admits a role that exists and whose trust policy (``sts:ExternalId``) allows the call
(see :mod:`sandbox_aws.sts`). With a state file it keeps everything across restarts
(see :mod:`sandbox_aws.state`). Start it with ``python -m sandbox_aws [--state FILE]``
or, in tests, with :class:`sandbox_aws.server.SandboxServer`.
"""
