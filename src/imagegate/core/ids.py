"""Typed identifiers, so that an owner can't be passed where an asset id goes."""

import re
import secrets
from typing import NewType

from imagegate.core.errors import NotFound

Subject = NewType("Subject", str)
AssetId = NewType("AssetId", str)

LOCAL_SUBJECT = Subject("local")

_ASSET_ID = re.compile(r"img_[0-9a-f]{24}")


def new_asset_id() -> AssetId:
    """A fresh random id; ids are never reused, so an old link can't revive."""
    return AssetId("img_" + secrets.token_hex(12))


def is_asset_id(value: str) -> bool:
    return _ASSET_ID.fullmatch(value) is not None


def parse_asset_id(value: str) -> AssetId:
    """Accept only well-formed ids; anything else answers like a missing asset."""
    if not is_asset_id(value):
        raise NotFound(f"image not found: {value[:40]!r}")
    return AssetId(value)


JobId = NewType("JobId", str)

_JOB_ID = re.compile(r"job_[0-9a-f]{24}")


def new_job_id() -> JobId:
    return JobId("job_" + secrets.token_hex(12))


def is_job_id(value: str) -> bool:
    return _JOB_ID.fullmatch(value) is not None


def parse_job_id(value: str) -> JobId:
    """Accept only well-formed ids; anything else answers like a missing job."""
    if not is_job_id(value):
        raise NotFound(f"job not found: {value[:40]!r}")
    return JobId(value)


UploadId = NewType("UploadId", str)

_UPLOAD_ID = re.compile(r"up_[0-9a-f]{24}")


def new_upload_id() -> UploadId:
    return UploadId("up_" + secrets.token_hex(12))


def is_upload_id(value: str) -> bool:
    return _UPLOAD_ID.fullmatch(value) is not None
