"""YAML configuration → validated, typed settings.

The keys are a public contract (see ``config/example.yaml`` for every key with comments). Errors name the
key path and, where the YAML parser knows it, the line: ``businesscentral.auth.client_id (line 12): field
required``. Secret values may be written as ``${ENV_VAR}``, ``file:/path`` or ``credential:NAME`` (systemd
``LoadCredential=``) and are resolved while validating; they are held as :class:`syncd.secrets.Secret`,
which never prints its value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from syncd.configvalues import Duration, SecretValue, Size
from syncd.errors import ConfigError
from syncd.imaging import PictureProfile
from syncd.secrets import Secret, check_literal_secret_permissions
from syncd.types import SourceKind, TargetKind


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, arbitrary_types_allowed=True, hide_input_in_errors=True
    )


# --- SuperOffice auth ------------------------------------------------------------------------------


def _no_userinfo(url: str) -> None:
    """A base_url must not carry credentials (``https://user:pass@host/…``): they would be sent to
    whoever the URL names and printed wherever the URL is. The value itself is never echoed."""
    if "@" in urlsplit(url).netloc:
        raise ValueError(
            "must not contain a user name or password (user:password@host); put credentials under auth:"
        )


class SOBasicAuth(_Model):
    type: Literal["basic"]
    username: str
    password: SecretValue


class SOTicketAuthConfig(_Model):
    type: Literal["soticket"]
    ticket: SecretValue
    app_token: SecretValue | None = None


class SOBearerAuth(_Model):
    type: Literal["bearer"]
    token: SecretValue
    app_token: SecretValue | None = None


class SOSystemUserAuth(_Model):
    type: Literal["system_user"]
    application_token: SecretValue = Field(description="the app's client secret, sent as SO-AppToken")
    system_user_token: SecretValue
    private_key: SecretValue = Field(description="PEM private key of the application (RSA)")
    context_identifier: str | None = None  # derived from base_url (CustNNNNN) when absent
    login_url: str | None = None  # default: https://{env}.superoffice.com/login from base_url's host
    jwt_public_key: str | None = None  # PEM of SuperOffice's signing certificate key: verify the JWT
    ticket_lifetime: Duration = 6 * 3600.0  # documented sliding window; renewed before it ends

    @field_validator("login_url")
    @classmethod
    def _login_url(cls, v: str | None) -> str | None:
        if v is not None:
            _no_userinfo(v)
        return v


SOAuth = Annotated[
    SOBasicAuth | SOTicketAuthConfig | SOBearerAuth | SOSystemUserAuth, Field(discriminator="type")
]


# --- Business Central auth -------------------------------------------------------------------------


class BCClientCredentials(_Model):
    type: Literal["client_credentials"]
    tenant_id: str
    client_id: str
    client_secret: SecretValue | None = None
    certificate: str | None = None  # PEM certificate registered on the app (instead of a client secret)
    private_key: SecretValue | None = None  # its private key (PEM)
    scope: str = "https://api.businesscentral.dynamics.com/.default"
    token_url: str | None = None  # default https://login.microsoftonline.com/{tenant_id}/oauth2/v2.0/token

    @field_validator("token_url")
    @classmethod
    def _token_url(cls, v: str | None) -> str | None:
        if v is not None:
            _no_userinfo(v)
        return v

    @model_validator(mode="after")
    def _one_credential(self) -> BCClientCredentials:
        if self.client_secret is None and (self.certificate is None or self.private_key is None):
            raise ValueError("needs client_secret, or certificate and private_key")
        return self


class BCBasicAuth(_Model):
    type: Literal["basic"]
    username: str
    password: SecretValue = Field(description="web service access key (on-premises)")


class BCBearerAuth(_Model):
    type: Literal["bearer"]
    token: SecretValue


BCAuth = Annotated[BCClientCredentials | BCBasicAuth | BCBearerAuth, Field(discriminator="type")]


# --- sections --------------------------------------------------------------------------------------


class ApiLimits(_Model):
    requests_per_second: float = Field(gt=0)
    concurrency: int = Field(ge=1, le=64)
    timeout: Duration = 60.0  # per request, total
    connect_timeout: Duration = 15.0
    max_retries: int = Field(default=6, ge=0, le=20)  # per request, for 408/429/5xx/connection errors
    max_retry_wait: Duration = 300.0  # the longest Retry-After we are willing to wait before giving up
    burst: float | None = Field(
        default=None, ge=1
    )  # requests that may go at once after idling (default: 1 s worth)
    # Every reply is bounded, counted after decompression: listing pages by max_page_bytes, every other
    # reply (metadata, errors, tokens) by max_reply_bytes; a listing ends after max_pages pages at most.
    max_reply_bytes: Size = Field(default=1_000_000, ge=1024)
    max_page_bytes: Size = Field(default=20_000_000, ge=1024)
    max_pages: int = Field(default=10_000, ge=1)


def _so_limits() -> ApiLimits:
    # A SuperOffice SDK caps itself at 10 calls/s ("SO specs"); stay at that by default.
    return ApiLimits(requests_per_second=10, concurrency=8)


def _bc_limits() -> ApiLimits:
    # BC online: 6,000 requests / 5 min per principal = 20/s, and 5 concurrent requests per user.
    return ApiLimits(requests_per_second=18, concurrency=5)


class SuperOfficeConfig(_Model):
    base_url: str
    auth: SOAuth
    # The tenant status service (GET {state_url}/{ContextIdentifier}, no auth). Default: SuperOffice's
    # own https://{sod|qaonline|online}.superoffice.com/api/state for its online hosts, none elsewhere.
    state_url: str | None = None
    limits: ApiLimits = Field(default_factory=_so_limits)
    page_size: int = Field(default=1000, ge=1, le=5000)  # rows per listing page; 1,000 at most are asked
    max_image_bytes: Size = 20_000_000
    # How a run learns which pictures changed without downloading them (syncd.fingerprints): ``auto``
    # reads every picture's fingerprint in a few pages of the Dynamic archive provider, verified against
    # ImageInfo on a sample, and falls back to ``per_record`` (one ImageInfo request per record) where
    # the provider cannot be used; ``bulk`` insists on the provider; ``per_record`` never uses it.
    change_detection: Literal["auto", "bulk", "per_record"] = "auto"
    # SuperOffice does not document that saving a picture moves the record's updatedDate, and most
    # likely it does not; so by default every run asks ImageInfo for every matched record. Set true
    # only where picture changes are known to touch updatedDate: then incremental runs skip records
    # not updated since the last good run (full reconciles still check everything).
    trust_updated_date: bool = False

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, v: str) -> str:
        v = v.rstrip("/")
        parts = urlsplit(v)
        _no_userinfo(v)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s) URL like https://online.superoffice.com/Cust12345/api/v1")
        if not parts.path.lower().endswith("/api/v1"):
            raise ValueError("must end with /api/v1, e.g. https://online.superoffice.com/Cust12345/api/v1")
        return v

    @field_validator("state_url")
    @classmethod
    def _check_state_url(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = v.rstrip("/")
        _no_userinfo(v)
        if urlsplit(v).scheme not in ("http", "https") or not urlsplit(v).netloc:
            raise ValueError("must be an http(s) URL like https://online.superoffice.com/api/state")
        return v

    @property
    def context_identifier(self) -> str:
        """The tenant (``Cust12345``) from the base URL's path segment before ``/api/v1``."""
        segments = [s for s in urlsplit(self.base_url).path.split("/") if s]
        return segments[-3] if len(segments) >= 3 else ""


class BusinessCentralConfig(_Model):
    base_url: str
    # The company (name or id) of mappings that name none; optional when every mapping names one.
    company: str | None = Field(default=None, min_length=1)
    auth: BCAuth
    limits: ApiLimits = Field(default_factory=_bc_limits)
    page_size: int = Field(default=1000, ge=1, le=20000)

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, v: str) -> str:
        v = v.rstrip("/")
        parts = urlsplit(v)
        _no_userinfo(v)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s) URL ending in /api/v2.0, /api/v1.0 or /api/beta")
        if not re.search(r"/api/(v2\.0|v1\.0|beta)$", parts.path):
            raise ValueError(
                "must end with /api/v2.0 (or /api/v1.0, /api/beta), e.g. "
                "https://api.businesscentral.dynamics.com/v2.0/TENANT/production/api/v2.0"
            )
        return v

    @property
    def dialect(self) -> str:
        """``v2.0`` (picture/pictureContent) or ``v1.0``/``beta`` (picture({id})/content)."""
        return self.base_url.rsplit("/", 1)[-1]


SourceFormat = Literal["JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP"]
DEFAULT_SOURCE_FORMATS: tuple[SourceFormat, ...] = ("JPEG", "PNG", "GIF", "WEBP")


class PictureConfig(_Model):
    max_width: int = Field(default=500, ge=16, le=4096)
    max_height: int = Field(default=500, ge=16, le=4096)
    format: Literal["JPEG", "PNG"] = "JPEG"
    quality: int = Field(default=85, ge=30, le=95)
    background: str = "#ffffff"
    max_bytes: Size = 1_000_000
    # Source formats syncd decodes; anything else fails its item without being decoded.
    allowed_formats: list[SourceFormat] = Field(default_factory=lambda: list(DEFAULT_SOURCE_FORMATS))
    # Decompression-bomb limit, checked on the header before a pixel is decoded.
    max_input_pixels: int = Field(default=50_000_000, ge=10_000, le=500_000_000)
    # Memory all concurrent decodes may use together (estimated from each header: pixels × bands ×
    # bytes per sample, plus the copies decoding makes); a picture needing more alone fails its item.
    max_decode_memory: Size = Field(default=768_000_000, ge=16_000_000)

    @field_validator("allowed_formats", mode="before")
    @classmethod
    def _formats(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        if isinstance(v, list):
            names = [f.strip().upper() if isinstance(f, str) else f for f in v]
            return ["JPEG" if f in ("JPG", "JFIF") else f for f in names]
        return v

    @field_validator("allowed_formats")
    @classmethod
    def _some_format(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("must name at least one format (JPEG, PNG, GIF, WEBP, TIFF, BMP)")
        return list(dict.fromkeys(v))

    @field_validator("format", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @field_validator("background")
    @classmethod
    def _colour(cls, v: str) -> str:
        if not re.fullmatch(r"#[0-9a-fA-F]{6}", v):
            raise ValueError("must be a colour like #ffffff")
        return v.lower()


class Limits(_Model):
    concurrency: int = Field(default=8, ge=1, le=64)  # items in flight per mapping run
    max_items_per_run: int | None = Field(default=None, ge=1)
    max_runtime: Duration | None = None
    max_clears: int = Field(default=10, ge=0)  # absolute cap on pictures cleared in one run
    max_clears_percent: float = Field(default=10.0, ge=0, le=100)
    cpu_workers: int | None = Field(default=None, ge=1, le=64)  # picture normalizer threads (default: CPUs)


class Schedule(_Model):
    interval: Duration = 600.0
    full_reconcile: str = "0 3 * * *"  # cron, local time of the host

    @field_validator("full_reconcile")
    @classmethod
    def _cron(cls, v: str) -> str:
        if len(v.split()) != 5:
            raise ValueError('must be a 5-field cron expression like "0 3 * * *"')
        return v


class ServerConfig(_Model):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, le=65535)
    # Host names (or addresses) the endpoint answers to besides server.host, localhost, 127.0.0.1 and
    # [::1]: a request naming any other host is refused (a DNS-rebinding page in a browser names its own).
    allowed_hosts: list[str] = Field(default_factory=list)
    # With a token, `/`, `/status.json` and the thumbnails want `Authorization: Bearer TOKEN` (or HTTP
    # Basic with the token as password, which browsers ask for); /healthz, /readyz, /metrics stay open.
    token: SecretValue | None = None

    @field_validator("token")
    @classmethod
    def _long_enough(cls, v: Secret | None) -> Secret | None:
        if v is not None and len(v.reveal().strip()) < 16:
            raise ValueError("must be at least 16 characters (e.g. the output of `openssl rand -hex 24`)")
        return v

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, v: list[str]) -> list[str]:
        out = []
        for name in v:
            host = name.strip().lower().rstrip(".")
            if not host or any(c in host for c in "/@ \t?#") or (":" in host and not host.startswith("[")):
                raise ValueError(
                    f"{name!r} is not a host name: give the name or address only, without scheme, port or "
                    "path (IPv6 in brackets, e.g. [fd00::1])"
                )
            out.append(host)
        return out


class Match(_Model):
    source: str  # any SuperOffice list column, e.g. code, number, orgnr, email/emailAddress, personNumber
    target: str  # any BC field, e.g. number, email, taxRegistrationNumber


class MappingConfig(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    source: SourceKind
    target: TargetKind
    match: Match | None = None
    pairs: dict[str, str] = Field(default_factory=dict)  # explicit source id → target number
    on_source_blank: Literal["keep", "clear"] = "keep"
    on_target_changed: Literal["overwrite", "keep"] = "overwrite"
    enabled: bool = True
    # the Business Central company (name or id) it writes to; default: businesscentral.company
    company: str | None = Field(default=None, min_length=1)

    @field_validator("pairs", mode="before")
    @classmethod
    def _pairs_as_strings(cls, v: Any) -> Any:
        if isinstance(v, Mapping):
            return {str(k).strip(): str(val).strip() for k, val in v.items()}
        return v

    @model_validator(mode="after")
    def _needs_a_rule(self) -> MappingConfig:
        if self.match is None and not self.pairs:
            raise ValueError("needs `match: {source: ..., target: ...}` or `pairs: {...}` (or both)")
        for k in self.pairs:
            if not k.isdigit():
                raise ValueError(f"pairs: source id {k!r} must be a SuperOffice {self.source} id (a number)")
        return self


class Config(_Model):
    superoffice: SuperOfficeConfig
    businesscentral: BusinessCentralConfig
    ledger: Path = Path("./syncd-ledger.sqlite")
    picture: PictureConfig = Field(default_factory=PictureConfig)
    limits: Limits = Field(default_factory=Limits)
    schedule: Schedule = Field(default_factory=Schedule)
    server: ServerConfig = Field(default_factory=ServerConfig)
    shutdown_timeout: Duration = 20.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    mappings: list[MappingConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        names = [m.name for m in self.mappings]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"mapping names must be unique; repeated: {', '.join(dupes)}")
        return self

    @model_validator(mode="after")
    def _companies(self) -> Config:
        nameless = [m.name for m in self.mappings if m.company is None]
        if nameless and self.businesscentral.company is None:
            raise ValueError(
                f"mapping {', '.join(map(repr, nameless))} names no company and businesscentral.company is "
                "not set: set `company:` on the mapping or businesscentral.company"
            )
        # Two mappings never own one BC record: the same entity in the same company is refused. (One
        # naming the company and one its id is found once the names are resolved: syncd.targets.)
        owner: dict[tuple[str, str], str] = {}
        for m in self.mappings:
            key = (self.company_of(m).strip().casefold(), str(m.target))
            if key in owner:
                raise ValueError(
                    f"mappings {owner[key]!r} and {m.name!r} both write pictures to {m.target} of company "
                    f"{self.company_of(m)!r}: a Business Central record must have one owner (merge them, "
                    "or point one at another company)"
                )
            owner[key] = m.name
        return self

    def company_of(self, mapping: MappingConfig) -> str:
        """The Business Central company (name or id, as configured) that ``mapping`` writes to."""
        company = mapping.company or self.businesscentral.company
        assert company is not None, "checked by the config validator"
        return company

    @property
    def companies(self) -> list[str]:
        """Every company the mappings write to, as configured, in mapping order, without repeats."""
        return list(dict.fromkeys(self.company_of(m) for m in self.mappings))

    def picture_profile(self) -> PictureProfile:
        p = self.picture
        bg = p.background.lstrip("#")
        return PictureProfile(
            max_width=p.max_width,
            max_height=p.max_height,
            format=p.format,
            quality=p.quality,
            background=(int(bg[0:2], 16), int(bg[2:4], 16), int(bg[4:6], 16)),
            max_bytes=p.max_bytes,
            max_input_bytes=self.superoffice.max_image_bytes,
            max_input_pixels=p.max_input_pixels,
            allowed_formats=tuple(p.allowed_formats),
        )

    def mapping(self, name: str) -> MappingConfig:
        for m in self.mappings:
            if m.name == name:
                return m
        raise ConfigError(
            f"no mapping named {name!r}",
            hint=f"mappings in the config: {', '.join(m.name for m in self.mappings)}",
        )


# --- loading ---------------------------------------------------------------------------------------


def _line_of(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the key at ``loc`` — or, if it is missing, of its nearest parent key."""
    node = root
    line = root.start_mark.line + 1 if root is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = next(((k, v) for k, v in node.value if getattr(k, "value", None) == part), None)
            if found is None:
                break
            line, node = found[0].start_mark.line + 1, found[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _user_loc(data: Any, loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """Drop the tags pydantic inserts into error locations (union discriminators such as ``basic``)."""
    out: list[int | str] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("type") == part:
            continue  # discriminated-union tag, not a key the user wrote
        out.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return tuple(out)


def _format_errors(exc: ValidationError, data: Any, root: yaml.Node | None, source: str) -> str:
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = _user_loc(data, tuple(err["loc"]))
        path = ".".join(str(p) for p in loc) or "(top level)"
        line = _line_of(root, loc)
        where = f"{source}:{line}" if line else source
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"  {path} ({where}): {msg}")
    return "invalid configuration:\n" + "\n".join(lines)


def parse_config(
    text: str, *, source: str = "<config>", path: Path | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Validate YAML text. Raises :class:`ConfigError` with every problem, each naming key and line."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the configuration must be a YAML mapping (key: value)")
    context = {"config_path": path, "env": os.environ if env is None else env}
    try:
        config = Config.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(
            _format_errors(exc, data, root, source),
            hint="see config/example.yaml for every key with comments",
        ) from None
    state_dir = (os.environ if env is None else env).get("STATE_DIRECTORY")
    if "ledger" not in data and state_dir:
        # Under systemd (StateDirectory=syncd) the ledger belongs in /var/lib/syncd, not next to a
        # read-only config file.
        config = config.model_copy(update={"ledger": Path(state_dir.split(":")[0]) / "ledger.sqlite"})
    elif path is not None and config.ledger and not config.ledger.is_absolute():
        # A relative ledger path is relative to the config file, not to wherever syncd was started.
        config = config.model_copy(update={"ledger": (path.parent / config.ledger)})
    return config


def load_config(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file. Raises :class:`ConfigError` naming the file, key and line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file {p} does not exist", hint="pass -c FILE; start from config/example.yaml"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from None
    return parse_config(text, source=str(p), path=p.resolve(), env=env)


def literal_secret_warning(path: str | os.PathLike[str]) -> str | None:
    """A warning when the file holds a literal secret and others may read it (see secrets.py)."""
    return check_literal_secret_permissions(Path(path))
