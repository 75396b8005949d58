"""The seeded sandbox dataset: SuperOffice contacts/persons and Business Central customers/employees
that match by key, with the awkward cases a real CRM/ERP pair holds, and what a correct sync must do.

``build_dataset(seed, contacts, persons)`` is deterministic for its arguments (same seed → same
snapshots, in any process) and fast: pictures are made lazily by ``pictures.make_picture`` on first
download, so even 12 MP photos cost nothing until someone asks for them.

What the data holds (default mappings, as in config/sandbox.yaml):
    customers   contact ``code`` ("C00001") ↔ BC customer ``number``
    staff       person ``personNumber`` ("P00001") ↔ BC employee ``number``
For each side (from 10 records up; smaller datasets get fewer of the special cases):
    ~5 % unmatched      a key no BC record carries
    ~2 % without a key  empty code / personNumber (reported as unmatched)
    ambiguous           1 per 60 records: two BC records whose numbers differ only by case or
                        surrounding spaces, and 1 per 60: two SuperOffice records sharing one key
    one key written with different case and spaces on the SuperOffice side that still matches
    pictures            mostly small JPEGs; one each of EXIF-rotated, CMYK, PNG with alpha, 16-bit PNG,
                        palette GIF, animated GIF, WebP, GPS-EXIF JPEG; 1 per 100 a 12 MP JPEG;
                        ~10 % blank; ~2 % broken (truncated JPEG / HTML page). Special and broken
                        pictures sit on matched records, so a sync meets all of them.
    BC pictures         ~15 % of matched BC records already have a picture (at least one whose
                        source is blank, which a correct sync leaves alone), and some BC records have
                        no SuperOffice source at all.
    a second company    ``CRONUS DE`` (``SECOND_COMPANY_NAME``): one customer, without a picture, for
                        every matched customer of CRONUS, with the same number and its own id;
                        ``expected["companies"]`` lists both companies' ids and DE's customers by number.

``Dataset.expected`` says, per mapping, what the FIRST run with default policies must end with
(``outcomes`` by source id, using ``syncd.types.Outcome`` values), which pairs it writes, and which
sources are blank, broken, unmatched or ambiguous. Keys compare like ``syncd.matcher.normalize_key``
(whitespace-collapsed, case-insensitive).
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from syncd.sandbox.businesscentral import BCState
from syncd.sandbox.pictures import BROKEN_KINDS, make_picture
from syncd.sandbox.superoffice import SOState

#: Every generated date lies before this instant (the dataset's "now"); edits made later are newer.
DATA_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
COMPANY_NAME = "CRONUS"
#: A second company of the same environment (one per country is the usual reason): its customers carry
#: the same numbers as CRONUS's matched customers, so a key exists in both companies.
SECOND_COMPANY_NAME = "CRONUS DE"

#: MIME type SuperOffice records for each picture kind (broken ones were uploaded as JPEGs).
KIND_MIME: dict[str, str] = {
    "jpeg_small": "image/jpeg",
    "jpeg_12mp": "image/jpeg",
    "jpeg_exif_rotated": "image/jpeg",
    "jpeg_cmyk": "image/jpeg",
    "png_alpha": "image/png",
    "png_16bit": "image/png",
    "gif_palette": "image/gif",
    "gif_animated": "image/gif",
    "webp": "image/webp",
    "jpeg_gps_exif": "image/jpeg",
    "broken_truncated": "image/jpeg",
    "broken_html": "image/jpeg",
}
SPECIAL_KINDS: tuple[str, ...] = (
    "jpeg_exif_rotated",
    "jpeg_cmyk",
    "png_alpha",
    "png_16bit",
    "gif_palette",
    "gif_animated",
    "webp",
    "jpeg_gps_exif",
)

_PREFIXES = (
    "Nordic",
    "Fjord",
    "Aurora",
    "Polar",
    "Viking",
    "Granite",
    "Birch",
    "Harbor",
    "Summit",
    "Coastal",
    "Midnight",
    "Glacier",
    "Pine",
    "Storm",
    "Silver",
    "Northern",
    "Copper",
    "Atlas",
    "Lumen",
    "Delta",
)
_SUFFIXES = (
    "Consulting",
    "Logistics",
    "Bygg",
    "Data",
    "Marine",
    "Energi",
    "Design",
    "Foods",
    "Systems",
    "Media",
    "Shipping",
    "Health",
    "Solutions",
    "Invest",
    "Retail",
)
_LEGAL = ("AS", "AB", "ApS", "Oy", "Ltd", "GmbH")
_FIRST = (
    "Ada",
    "Bjørn",
    "Camilla",
    "David",
    "Eva",
    "Fredrik",
    "Greta",
    "Henrik",
    "Ingrid",
    "Jonas",
    "Kari",
    "Lars",
    "Maja",
    "Nils",
    "Oda",
    "Per",
    "Rune",
    "Siri",
    "Tor",
    "Ulla",
    "Vilde",
    "Åse",
)
_LAST = (
    "Hansen",
    "Johansson",
    "Nielsen",
    "Virtanen",
    "Berg",
    "Lund",
    "Dahl",
    "Strand",
    "Holm",
    "Nyström",
    "Eriksen",
    "Bakke",
    "Lindqvist",
    "Haugen",
    "Karlsen",
    "Sørensen",
)
_CATEGORIES = ("Kunde", "Prospekt", "Leverandør", "Partner")
_BUSINESSES = ("IT", "Bygg", "Handel", "Industri", "Shipping", "Helse")
_COUNTRIES = ("Norway", "Sweden", "Denmark", "Finland")
_TITLES = ("CEO", "CFO", "Sales Manager", "Engineer", "Consultant", "Buyer", "Accountant")


@dataclass
class Dataset:
    """SuperOffice and Business Central data that belong together, and the sync's expected outcome."""

    so: SOState
    bc: BCState
    company_id: str  # the "CRONUS" company
    expected: dict[str, Any]
    second_company_id: str = ""  # the "CRONUS DE" company


@dataclass
class _Record:
    """One planned source record: its key, role and picture kind (None: blank)."""

    index: int  # 1-based entity id
    role: str  # matched | variant | unmatched | nokey | dup_target | dup_source
    key: str  # the key as SuperOffice stores it
    picture: str | None
    shares_with: int | None = None  # dup_source: the id whose key this record shares


def _plan(n: int, prefix: str, rng: random.Random) -> list[_Record]:
    """Roles and pictures for ``n`` source records, keys ``{prefix}00001``…"""
    roles = ["matched"] * n
    shares: dict[int, int] = {}
    order = list(range(n))
    rng.shuffle(order)
    free = iter(order)

    def assign(role: str, count: int) -> list[int]:
        picked = [next(free) for _ in range(count)]
        for i in picked:
            roles[i] = role
        return picked

    if n >= 10:
        groups = max(1, n // 60)
        assign("dup_target", groups)
        for _ in range(groups):
            first, second = next(free), next(free)
            roles[first] = roles[second] = "dup_source"
            shares[second] = first
        assign("variant", 1)
    if n >= 5:
        assign("unmatched", max(1, round(n * 0.05)))
        assign("nokey", max(1, round(n * 0.02)))

    records = []
    for i, role in enumerate(roles):
        key = f"{prefix}{i + 1:05d}"
        if role == "nokey":
            key = ""
        elif role == "variant":
            key = f" {key.lower()} "
        elif i in shares:
            key = f"{prefix}{shares[i] + 1:05d}"
        records.append(_Record(i + 1, role, key, "jpeg_small", shares[i] + 1 if i in shares else None))

    # Pictures: the interesting kinds land on uniquely matched records, so a sync meets every one.
    kinds: list[str | None] = []
    if n >= 20:
        broken = max(1, round(n * 0.02))
        kinds += [("broken_truncated", "broken_html")[k % 2] for k in range(broken)]
        kinds += list(SPECIAL_KINDS)
        kinds += ["jpeg_12mp"] * max(1, n // 100)
    blanks = round(n * 0.10)
    matched = [r for r in records if r.role in ("matched", "variant")]
    rng.shuffle(matched)
    for rec, kind in zip(matched, kinds, strict=False):
        rec.picture = kind
    rest = matched[len(kinds) :] + [r for r in records if r.role not in ("matched", "variant")]
    rng.shuffle(rest)
    for rec in rest[:blanks]:
        rec.picture = None
    return records


def _date_between(rng: random.Random, earliest: datetime, latest: datetime) -> datetime:
    span = int((latest - earliest).total_seconds())
    return earliest + timedelta(seconds=rng.randint(0, max(0, span)))


def _picture_seed(seed: int, side: int, index: int) -> int:
    return seed * 1_000_003 + side * 500_000 + index


def _number_variant(number: str, which: int) -> str:
    """A BC number that differs from ``number`` only by case or surrounding spaces."""
    return number.lower() if which % 2 == 0 else f" {number} "


def build_dataset(seed: int = 1, contacts: int = 120, persons: int = 120) -> Dataset:
    """Build SuperOffice + Business Central data for the default mappings; see the module docstring."""
    if persons and not contacts:
        raise ValueError("persons need at least one contact to belong to")
    rng = random.Random(seed)
    so = SOState(clock=lambda: DATA_EPOCH.timestamp())
    bc = BCState(seed=seed, clock=lambda: DATA_EPOCH)
    company_id = bc.add_company(COMPANY_NAME)
    bc_picture_pool = [functools.partial(make_picture, "jpeg_small", 900_000 + k) for k in range(4)]

    expected: dict[str, Any] = {
        "key_normalization": "whitespace-collapsed, case-insensitive (syncd.matcher.normalize_key)",
        "mappings": {},
        "sources": {},
    }

    contact_plan = _plan(contacts, "C", rng)
    for rec in contact_plan:
        name = f"{rng.choice(_PREFIXES)} {rng.choice(_SUFFIXES)} {rng.choice(_LEGAL)}"
        registered = _date_between(rng, DATA_EPOCH - timedelta(days=1500), DATA_EPOCH - timedelta(days=30))
        updated = _date_between(rng, registered, DATA_EPOCH - timedelta(days=1))
        slug = "".join(ch for ch in name.lower() if ch.isalnum())[:20]
        so.add_contact(
            contact_id=rec.index,
            name=name,
            number=str(10_000 + rec.index),
            code=rec.key,
            orgnr=f"NO{rng.randint(800_000_000, 999_999_999)}",
            email=f"post@{slug}.example",
            category=rng.choice(_CATEGORIES),
            business=rng.choice(_BUSINESSES),
            country=rng.choice(_COUNTRIES),
            registeredDate=registered,
            updatedDate=updated,
        )
        _seed_picture(so, "contact", rec, _picture_seed(seed, 0, rec.index), rng, registered)

    person_plan = _plan(persons, "P", rng)
    person_names: dict[int, tuple[str, str]] = {}
    for rec in person_plan:
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        person_names[rec.index] = (first, last)
        registered = _date_between(rng, DATA_EPOCH - timedelta(days=1500), DATA_EPOCH - timedelta(days=30))
        updated = _date_between(rng, registered, DATA_EPOCH - timedelta(days=1))
        so.add_person(
            person_id=rec.index,
            contact_id=rng.randint(1, contacts),
            first_name=first,
            last_name=last,
            person_number=rec.key,
            email=f"{first.lower()}.{last.lower()}.{rec.index}@example.com",
            title=rng.choice(_TITLES),
            personRegisteredDate=registered,
            personUpdatedDate=updated,
        )
        _seed_picture(so, "person", rec, _picture_seed(seed, 1, rec.index), rng, registered)

    def customer_fields(index: int) -> dict[str, Any]:
        c = so.contacts[index]
        return {"display_name": c.name, "email": c.email, "taxRegistrationNumber": c.orgnr}

    def employee_fields(index: int) -> dict[str, Any]:
        first, last = person_names[index]
        p = so.persons[index]
        return {"display_name": f"{first} {last}", "givenName": first, "surname": last, "email": p.email}

    expected["mappings"]["customers"] = _build_targets(
        bc,
        company_id,
        "customers",
        "C",
        contact_plan,
        customer_fields,
        rng,
        bc_picture_pool,
        source="contact",
        source_column="code",
    )
    expected["mappings"]["staff"] = _build_targets(
        bc,
        company_id,
        "employees",
        "P",
        person_plan,
        employee_fields,
        rng,
        bc_picture_pool,
        source="person",
        source_column="personNumber",
    )
    expected["sources"] = {"contact": _source_summary(contact_plan), "person": _source_summary(person_plan)}
    second_id = _second_company(bc, contact_plan, customer_fields, seed)
    expected["companies"] = {
        COMPANY_NAME: {"id": company_id},
        SECOND_COMPANY_NAME: {
            "id": second_id,
            "customers": {r.number: r.id for r in bc.records(second_id, "customers")},
        },
    }

    # From here on, edits are stamped with the real time (the emulators point the clocks at theirs).
    so.clock = _wall_clock
    bc.clock = _wall_datetime
    return Dataset(so=so, bc=bc, company_id=company_id, expected=expected, second_company_id=second_id)


def _second_company(
    bc: BCState, plan: list[_Record], fields_of: Callable[[int], dict[str, Any]], seed: int
) -> str:
    """``CRONUS DE``: a customer with the same number as each matched customer of CRONUS, no pictures.

    Built after everything else, with its own random stream, so CRONUS's data is the same as without it.
    """
    rng = random.Random(f"{seed}-second-company")
    company_id = bc.add_company(SECOND_COMPANY_NAME)
    for rec in plan:
        if rec.role in ("matched", "variant"):
            fields = fields_of(rec.index)
            fields["display_name"] = f"{fields['display_name']} (DE)"
            bc.add_record(
                company_id,
                "customers",
                number=rec.key.strip().upper(),
                picture=None,
                lastModifiedDateTime=_date_between(
                    rng, DATA_EPOCH - timedelta(days=400), DATA_EPOCH - timedelta(days=2)
                ),
                **fields,
            )
    return company_id


def _wall_clock() -> float:
    return datetime.now(UTC).timestamp()


def _wall_datetime() -> datetime:
    return datetime.now(UTC)


def _seed_picture(
    so: SOState, kind: str, rec: _Record, pic_seed: int, rng: random.Random, registered: datetime
) -> None:
    if rec.picture is None:
        return
    when = _date_between(rng, registered, DATA_EPOCH - timedelta(hours=1))
    so.set_image(
        kind,
        rec.index,
        functools.partial(make_picture, rec.picture, pic_seed),
        KIND_MIME[rec.picture],
        label=f"{rec.picture}:{pic_seed}",
        when=when,
    )


def _source_summary(plan: list[_Record]) -> dict[str, Any]:
    return {
        "pictures": {r.index: r.picture for r in plan},  # picture kind per source id, None = blank
        "blank": [r.index for r in plan if r.picture is None],
        "broken": [r.index for r in plan if r.picture in BROKEN_KINDS],
    }


def _build_targets(
    bc: BCState,
    company_id: str,
    entity_set: str,
    prefix: str,
    plan: list[_Record],
    fields_of: Callable[[int], dict[str, Any]],
    rng: random.Random,
    picture_pool: list[functools.partial[bytes]],
    *,
    source: str,
    source_column: str,
) -> dict[str, Any]:
    """Add the BC records for one mapping and return what a first sync of it must produce."""
    modified = DATA_EPOCH - timedelta(days=2)
    targets_with_picture: list[str] = []
    pairs: list[tuple[int, str]] = []
    dup_target_keys: list[str] = []

    def add(number: str, picture: bool, **fields: Any) -> str:
        display_name = fields.pop("display_name")
        data = rng.choice(picture_pool)() if picture else None
        rid = bc.add_record(
            company_id,
            entity_set,
            number=number,
            display_name=display_name,
            picture=data,
            lastModifiedDateTime=_date_between(rng, modified - timedelta(days=400), modified),
            **fields,
        )
        if picture:
            targets_with_picture.append(rid)
        return rid

    # Which matched BC records already hold a picture: ~15 %, plus one with a blank source and one with a
    # source picture so both decision-table rows are exercised whatever the seed.
    matched = [r for r in plan if r.role in ("matched", "variant")]
    with_picture = {r.index for r in matched if rng.random() < 0.15}
    blank_sources = [r.index for r in matched if r.picture is None]
    pictured_sources = [r.index for r in matched if r.picture is not None and r.picture not in BROKEN_KINDS]
    if blank_sources:
        with_picture.add(blank_sources[0])
    if pictured_sources:
        with_picture.add(pictured_sources[0])

    dup_count = 0
    for rec in plan:
        if rec.role in ("matched", "variant"):
            rid = add(rec.key.strip().upper(), rec.index in with_picture, **fields_of(rec.index))
            pairs.append((rec.index, rid))
        elif rec.role == "dup_target":
            add(rec.key, rng.random() < 0.5, **fields_of(rec.index))
            add(_number_variant(rec.key, dup_count), False, **fields_of(rec.index))
            dup_target_keys.append(rec.key)
            dup_count += 1
        elif rec.role == "dup_source" and rec.shares_with is None:
            add(rec.key, False, **fields_of(rec.index))
    # BC records no SuperOffice record maps to (about 5 %, some with pictures).
    orphans: list[str] = []
    for k in range(max(1, round(len(plan) * 0.05)) if plan else 0):
        number = f"{prefix}{90_000 + k + 1:05d}"
        base = fields_of(plan[k % len(plan)].index)
        base["display_name"] = f"{base['display_name']} (ERP only)"
        orphans.append(add(number, k % 2 == 0, **base))

    outcomes: dict[int, str] = {}
    blank: list[int] = []
    broken: list[int] = []
    written: list[tuple[int, str]] = []
    target_of = dict(pairs)
    for rec in plan:
        if rec.role in ("unmatched", "nokey"):
            outcomes[rec.index] = "unmatched"
        elif rec.role in ("dup_target", "dup_source"):
            outcomes[rec.index] = "ambiguous"
        elif rec.picture is None:
            outcomes[rec.index] = "blank"
            blank.append(rec.index)
        elif rec.picture in BROKEN_KINDS:
            outcomes[rec.index] = "failed"
            broken.append(rec.index)
        else:
            outcomes[rec.index] = "written"
            written.append((rec.index, target_of[rec.index]))
    written_targets = {t for _, t in written}
    all_targets = [r.id for r in bc.records(company_id, entity_set)]
    ambiguous_keys = sorted({r.key for r in plan if r.role == "dup_source"} | set(dup_target_keys))
    return {
        "source": source,
        "target": entity_set,
        "match": {"source": source_column, "target": "number"},
        "outcomes": outcomes,
        "counts": dict(sorted(Counter(outcomes.values()).items())),
        "pairs": [list(p) for p in pairs],
        "written": [list(p) for p in written],
        "blank": blank,
        "broken": broken,
        "unmatched": [r.index for r in plan if r.role in ("unmatched", "nokey")],
        "no_key": [r.index for r in plan if r.role == "nokey"],
        "ambiguous": [r.index for r in plan if r.role in ("dup_target", "dup_source")],
        "ambiguous_keys": ambiguous_keys,
        "targets_with_picture": sorted(targets_with_picture),
        "targets_without_source": sorted(orphans),
        "untouched_targets": sorted(t for t in all_targets if t not in written_targets),
    }
