"""The Business Central API emulator, by concern (``emulator.py`` says what each module holds).

The names other code imports are re-exported here; ``syncd.sandbox.server.Sandbox`` runs the emulator.
"""

from syncd.sandbox.businesscentral.emulator import BusinessCentralEmulator
from syncd.sandbox.businesscentral.limits import BCLimits
from syncd.sandbox.businesscentral.state import (
    BC_MAX_PAGE_SIZE,
    BC_RATE_LIMIT,
    BCCompany,
    BCPicture,
    BCRecord,
    BCState,
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
