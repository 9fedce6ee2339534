"""Teach moto the AWS partitions botocore knows and moto 5.2 does not (aws-iso-e, aws-iso-f, aws-eusc).

Without this, a KMS call in e.g. ``eu-isoe-west-1`` lands in moto's default account with
an ``arn:aws:`` ARN, because moto maps unknown regions to the ``aws`` partition and keeps
IAM/STS state (which resolves assumed-role credentials to accounts) per known partition.
"""

from __future__ import annotations

import sys

import boto3
from moto.utilities import utils as moto_utils


def install() -> None:
    """Register every botocore partition and its KMS regions with moto. Idempotent.

    Must run before the first account backend is created: moto copies the partition
    list into each account's IAM/STS backends when it creates them.
    """
    session = boto3.session.Session()
    for partition in session.get_available_partitions():
        for region in session.get_available_regions("kms", partition_name=partition):
            # moto matches region *prefixes*; a full region name is a prefix of itself,
            # so nothing broader than what botocore lists gets remapped.
            if moto_utils.get_partition(region) != partition:
                moto_utils.REGION_PREFIX_TO_PARTITION[region] = partition
        # In place: moto modules imported this very list object.
        if partition not in moto_utils.PARTITION_NAMES:
            moto_utils.PARTITION_NAMES.append(partition)
    _refresh_arn_partition_regex()


def _refresh_arn_partition_regex() -> None:
    """moto builds ``ARN_PARTITION_REGEX`` once at import and modules copy it by name."""
    old = moto_utils.ARN_PARTITION_REGEX
    new = r"^arn:(" + "|".join(sorted(moto_utils.PARTITION_NAMES)) + ")"
    if new == old:
        return
    # Modules imported later copy the new value from moto.utilities.utils.
    for name, module in list(sys.modules.items()):
        if name.startswith("moto.") and getattr(module, "ARN_PARTITION_REGEX", None) == old:
            vars(module)["ARN_PARTITION_REGEX"] = new
