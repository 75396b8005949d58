"""Which Business Central records a mapping owns: one company and one entity, never shared.

The config refuses two mappings that name the same entity and the same company (``syncd.config``). A
name and an id of one company look different there, so once the names are resolved (one
``GET /companies`` for all of them) two mappings that reach the same (company id, entity) are refused
here, before anything is listed or written: both would mirror pictures into the same records and
undo each other's writes.
"""

from __future__ import annotations

from collections.abc import Iterable

from syncd.config import MappingConfig
from syncd.errors import ConfigError
from syncd.runtime import Runtime

__all__ = ["check_owner", "check_owners"]


async def _resolved(rt: Runtime, mapping: MappingConfig) -> str | None:
    try:
        return (await rt.target_of(mapping.name).resolve_company()).lower()
    except ConfigError:
        return None  # a company that does not exist cannot be the same as one that does


def _refusal(rt: Runtime, a: MappingConfig, b: MappingConfig, company_id: str) -> ConfigError:
    cfg = rt.config
    names = f"{cfg.company_of(a)!r} and {cfg.company_of(b)!r}"
    name = rt.target_of(a.name).company_name or cfg.company_of(a)
    return ConfigError(
        f"mappings {a.name!r} and {b.name!r} both write pictures to {a.target} of Business Central company "
        f"{name!r} (id {company_id}; the config names it {names}); refusing to run either, as a record "
        "must have one owner",
        hint="remove one of the mappings, or point it at another company",
    )


async def check_owner(rt: Runtime, mapping: MappingConfig) -> None:
    """Raise :class:`ConfigError` when another mapping of the config resolves to ``mapping``'s company
    and entity. Resolves ``mapping``'s company (an unknown company raises its own ConfigError)."""
    mine = (await rt.target_of(mapping.name).resolve_company()).lower()
    for other in rt.config.mappings:
        if (
            other.name != mapping.name
            and other.target == mapping.target
            and await _resolved(rt, other) == mine
        ):
            raise _refusal(rt, mapping, other, mine)


async def check_owners(rt: Runtime, mappings: Iterable[MappingConfig]) -> None:
    """:func:`check_owner` for each of ``mappings`` (the daemon's startup and reload probe)."""
    for m in mappings:
        await check_owner(rt, m)
