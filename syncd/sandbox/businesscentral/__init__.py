"""The Business Central API emulator (see ``emulator.py`` for what it serves)."""

from syncd.sandbox.businesscentral.emulator import (
    BC_MAX_PAGE_SIZE,
    BC_RATE_LIMIT,
    BCCompany,
    BCLimits,
    BCPicture,
    BCRecord,
    BCState,
    BusinessCentralEmulator,
    inspect_picture,
)

__all__ = [
    "BC_MAX_PAGE_SIZE",
    "BC_RATE_LIMIT",
    "BCCompany",
    "BCLimits",
    "BCPicture",
    "BCRecord",
    "BCState",
    "BusinessCentralEmulator",
    "inspect_picture",
]
