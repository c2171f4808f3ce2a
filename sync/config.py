"""The YAML configuration: pydantic models, ``load_config`` and ``summarize``.

Loading happens in three steps, each reporting problems as :class:`ConfigError` with the YAML
path of the bad key, what was expected and what was found (never a secret's value):

1. parse the YAML and expand ``${VAR}`` / ``${VAR:-default}`` references in every string;
   under ``connections.<name>.credentials`` a value may also be ``{file: /path}``;
2. validate the document against the models below (types, ranges, enums, unknown keys);
3. cross-check: each connection's ``options`` and ``credentials`` are validated by its
   connector's own models (``connectors/<platform>/settings.py``, through
   ``connectors.registry``); connection names in priority lists and profiles, canonical field
   names in ``conflicts.fields``; and load each connection's field mapping, so a mapping that
   cannot round-trip fails here too.

Every option is documented in ``config.example.yaml`` at the repository root.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from connectors.base import ConnectionSettings, RateLimit, settings_problems
from connectors.registry import credentials_model, options_model
from sync.canonical import FIELD_NAMES, field_kind, is_known_field

if TYPE_CHECKING:
    from sync.mapping import FieldMapping

DATABASE_URL_ENV = "CONTACTSYNC_DATABASE_URL"
_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


class ConfigError(Exception):
    """A configuration problem; the message names the YAML path of the bad key, what was
    expected and what was found. It never contains the value of a secret."""


# --------------------------------------------------------------------------- models


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreConfig(_Model):
    """Where the staging store lives. Held as a secret: a URL may carry a password."""

    url: SecretStr | None = None


class RateLimitConfig(_Model):
    """A request budget: ``requests`` per ``per_seconds``."""

    requests: int = Field(gt=0)
    per_seconds: float = Field(gt=0)


class ConnectionConfig(_Model):
    """One platform account."""

    platform: Literal["acquire", "dmchamp", "gohighlevel", "comm100"]
    base_url: str
    credentials: dict[str, SecretStr] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)
    mapping: Path | None = None
    mapping_overrides: dict[str, Any] | None = None
    rate_limit: RateLimitConfig | None = None
    timeout_s: float = Field(default=30.0, gt=0)
    max_concurrency: int = Field(default=4, ge=1, le=64)
    max_retries: int = Field(default=6, ge=0, le=20)
    enabled: bool = True

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("an http(s) URL such as https://api.example.com/v1")
        return value.rstrip("/")


MatchKind = str


class MatchKey(_Model):
    """A matching key kind and how much it can be trusted alone."""

    kind: MatchKind
    strength: Literal["strong", "weak"] = "strong"

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value in ("email", "phone", "identity:*") or re.fullmatch(r"identity:[a-z0-9_]+", value):
            return value
        raise ValueError("email, phone, identity:<type> (lower-case) or identity:*")


def _default_keys() -> list[MatchKey]:
    return [MatchKey(kind="email"), MatchKey(kind="identity:*"), MatchKey(kind="phone", strength="weak")]


class MatchingConfig(_Model):
    """How records join persons, and what to do with duplicates on one platform."""

    keys: list[MatchKey] = Field(default_factory=_default_keys, min_length=1)
    duplicates: Literal["link_oldest", "merge_native", "flag"] = "link_oldest"

    def strength(self, kind: str) -> str | None:
        """The strength of a key kind (``identity:x`` falls back to ``identity:*``); None: not used."""
        for key in self.keys:
            if key.kind == kind:
                return key.strength
        if kind.startswith("identity:"):
            return next((k.strength for k in self.keys if k.kind == "identity:*"), None)
        return None


Policy = Literal["newest", "priority", "union"]


class ConflictsConfig(_Model):
    """How a field changed differently on several connections is decided."""

    policy: Policy = "newest"
    priority: list[str] = Field(default_factory=list)
    fields: dict[str, Policy] = Field(default_factory=dict)
    empty_erases: bool = False

    def field_policy(self, name: str) -> str:
        """The policy for one canonical field: a per-field override, else ``union`` for tags
        and identities, else the global policy (``union`` means ``newest`` for a scalar)."""
        if name in self.fields:
            return self.fields[name]
        if name.startswith("custom.") and "custom.*" in self.fields:
            return self.fields["custom.*"]
        if field_kind(name) == "set":
            return "union"
        if self.policy == "union" and field_kind(name) not in ("set", "list"):
            return "newest"
        return self.policy


class DeletesConfig(_Model):
    """What a delete on one platform does elsewhere."""

    policy: Literal["ignore", "propagate", "tag"] = "ignore"
    tag: str = Field(default="contactsync:deleted", min_length=1)
    # The mass-delete circuit breaker: a complete scan of one connection implying more deletes
    # than this (a share of its records, or a count) holds them for `contactsync deletes`.
    max_share: float = Field(default=0.10, ge=0.0, le=1.0)
    max_count: int = Field(default=50, ge=0)


class BreakerConfig(_Model):
    """The per-connection circuit breaker: after this many failed calls in a row a connection
    is left alone for the rest of the cycle (its pending writes stay pending)."""

    max_consecutive_failures: int = Field(default=5, ge=1)


class MergesConfig(_Model):
    """How a merge is carried to platforms without a native merge."""

    fallback: Literal["delete", "tag", "leave"] = "tag"
    tag: str = Field(default="contactsync:merged", min_length=1)


class ScheduleConfig(_Model):
    """When a profile runs: exactly one of ``interval_seconds`` or ``cron`` (5 fields, UTC) for
    the full cycle. ``adaptive: true`` adds per-connection polls between full cycles, each
    connection's interval adapting to its changes and budget (``sync.adaptive``): from
    ``min_interval_s`` when changes come, backing off to ``max_interval_s`` when idle, never
    spending more than ``max_budget_share`` of a documented limit on polling."""

    interval_seconds: float | None = Field(default=None, gt=0)
    cron: str | None = None
    adaptive: bool = False
    min_interval_s: float = Field(default=5.0, gt=0)
    max_interval_s: float = Field(default=300.0, gt=0)
    max_budget_share: float = Field(default=0.2, gt=0, le=1)

    @model_validator(mode="after")
    def _one(self) -> ScheduleConfig:
        if (self.interval_seconds is None) == (self.cron is None):
            raise ValueError("exactly one of interval_seconds or cron")
        if self.max_interval_s < self.min_interval_s:
            raise ValueError("min_interval_s no larger than max_interval_s")
        if self.cron is not None:
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(self.cron)
            except ValueError as exc:
                raise ValueError(f"a 5-field cron expression ({exc})") from None
        return self


class ProfileConfig(_Model):
    """A sync profile: which connections sync together, and when."""

    connections: list[str] | None = None  # None: every enabled connection
    schedule: ScheduleConfig = Field(default_factory=lambda: ScheduleConfig(interval_seconds=300))
    misfire_grace_seconds: int = Field(default=60, ge=1)


class PlanningConfig(_Model):
    """How a large plan is computed: ``workers`` processes (``auto``: one per core, at most
    four; 1: in the engine's own process)."""

    workers: int | Literal["auto"] = "auto"

    @field_validator("workers")
    @classmethod
    def _workers(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 32:
            raise ValueError("auto, or a number of processes from 1 to 32")
        return value

    def worker_count(self) -> int | None:
        """The number of workers, or None for the default (``sync.plan.pool.default_workers``)."""
        return None if self.workers == "auto" else int(self.workers)


class LoggingConfig(_Model):
    """Log level and format (``auto``: JSON lines unless stderr is a terminal)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    format: Literal["auto", "json", "console"] = "auto"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class WebConfig(_Model):
    """The operator's web page (``contactsync serve``; the daemon's listener mounts it too).
    ``auth_token`` is a secret (``${ENV_VAR}`` or ``{file: path}``): required to serve off
    loopback; when set, every request must present it (``Authorization: Bearer`` or the login
    form). ``record_links``: per connection, a URL template of a contact's page on the
    platform, ``{remote_id}`` filled in."""

    host: str = "127.0.0.1"
    port: int = Field(default=8780, ge=0, le=65535)
    auth_token: SecretStr | None = None
    record_links: dict[str, str] = Field(default_factory=dict)


class HttpConfig(_Model):
    """The daemon's HTTP listener (webhooks; other routes mounted beside them). Loopback by
    default: put a TLS-terminating proxy in front to receive webhooks from the internet."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8780, ge=0, le=65535)  # 0: any free port (tests)


#: GoHighLevel's published Ed25519 key for ``x-ghl-signature`` (its Webhook Integration Guide).
#: The legacy RSA ``x-wh-signature`` was retired on 2026-07-01 and has no default: configure its
#: key only to accept deliveries still signed that way.
GOHIGHLEVEL_ED25519_PUBLIC_KEY = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAi2HR1srL4o18O8BRa7gVJY7G7bupbN3H9AwJrHCDiOg=\n-----END PUBLIC KEY-----\n"


class GoHighLevelWebhooksConfig(_Model):
    """``POST /webhooks/gohighlevel``: signature keys, the replay window, backpressure and the
    debounce of the focused cycles the events drive."""

    enabled: bool = True
    # PEM (SPKI) public keys: ``x-ghl-signature`` (Ed25519) and the legacy ``x-wh-signature``
    # (RSA-SHA256). Literal PEM text, ${ENV_VAR} or {file: path}. None: that scheme is refused.
    ed25519_public_key: str | None = GOHIGHLEVEL_ED25519_PUBLIC_KEY
    rsa_public_key: str | None = None
    max_age_s: float = Field(default=300.0, gt=0)  # an older `timestamp` is refused (stale)
    max_inbox_depth: int = Field(default=10_000, ge=1)  # over it: 429, GoHighLevel retries
    debounce_s: float = Field(default=0.3, ge=0)  # events gathered before a focused cycle
    max_body_bytes: int = Field(default=262_144, ge=1024)


class WebhooksConfig(_Model):
    """Webhook receivers, per platform (GoHighLevel only: the others send no contact events)."""

    gohighlevel: GoHighLevelWebhooksConfig = Field(default_factory=GoHighLevelWebhooksConfig)


class Config(_Model):
    """The whole configuration. Build it with :func:`load_config`."""

    store: StoreConfig = Field(default_factory=StoreConfig)
    default_phone_region: str = "US"
    connections: dict[str, ConnectionConfig]
    matching: MatchingConfig = Field(default_factory=MatchingConfig)
    conflicts: ConflictsConfig = Field(default_factory=ConflictsConfig)
    deletes: DeletesConfig = Field(default_factory=DeletesConfig)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    merges: MergesConfig = Field(default_factory=MergesConfig)
    profiles: dict[str, ProfileConfig] = Field(default_factory=dict)
    planning: PlanningConfig = Field(default_factory=PlanningConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    webhooks: WebhooksConfig = Field(default_factory=WebhooksConfig)

    _path: Path | None = PrivateAttr(default=None)
    _store_url: str = PrivateAttr(default="")
    _warnings: list[str] = PrivateAttr(default_factory=list)
    _mappings: dict[str, FieldMapping] = PrivateAttr(default_factory=dict)

    @field_validator("default_phone_region", mode="before")
    @classmethod
    def _region(cls, value: Any) -> Any:
        import phonenumbers

        if isinstance(value, str) and value.upper() in phonenumbers.SUPPORTED_REGIONS:
            return value.upper()
        raise ValueError("an ISO 3166 alpha-2 region code with phone numbering, such as US or GB")

    @field_validator("connections")
    @classmethod
    def _names(cls, value: dict[str, ConnectionConfig]) -> dict[str, ConnectionConfig]:
        if not value:
            raise ValueError("at least one connection")
        for name in value:
            if not _NAME.match(name):
                raise ValueError(f"connection names of letters, digits, '_' and '-' (bad: {name!r})")
        return value

    # -- derived values --------------------------------------------------------------------

    @property
    def path(self) -> Path | None:
        """The config file this was loaded from."""
        return self._path

    @property
    def store_url(self) -> str:
        """The store's SQLAlchemy URL: ``CONTACTSYNC_DATABASE_URL``, else ``store.url``, else
        ``sqlite:///<config dir>/contactsync.db``."""
        return self._store_url

    @property
    def store_url_display(self) -> str:
        """The store URL with any password masked."""
        return mask_url(self._store_url)

    @property
    def warnings(self) -> list[str]:
        """Things that work but should not be so (literal secrets, unknown options)."""
        return list(self._warnings)

    def enabled_connections(self) -> list[str]:
        """Names of the enabled connections, in file order."""
        return [n for n, c in self.connections.items() if c.enabled]

    def effective_profiles(self) -> dict[str, ProfileConfig]:
        """The profiles to run; with none configured, one ``default`` profile with every
        enabled connection every 300 s (misfire grace 60 s). ``connections`` is filled in."""
        if not self.profiles:
            return {"default": ProfileConfig(connections=self.enabled_connections())}
        return {
            name: p if p.connections is not None else p.model_copy(update={"connections": self.enabled_connections()})
            for name, p in self.profiles.items()
        }

    def options(self, name: str) -> dict[str, Any]:
        """A connection's platform options as given, with ``default_region`` (the config's
        ``default_phone_region``) for every connector, and GoHighLevel's ``version`` (its
        options model's default) spelled out so the summary shows which API version is used."""
        conn = self.connections[name]
        opts = dict(conn.options)
        opts.setdefault("default_region", self.default_phone_region)
        if conn.platform == "gohighlevel":
            opts.setdefault("version", options_model(conn.platform).model_fields["version"].default)
        return opts

    def connection_settings(self, name: str) -> ConnectionSettings:
        """What the connector of connection ``name`` needs to reach its account."""
        if name not in self.connections:
            raise KeyError(f"unknown connection {name!r}; known: {', '.join(self.connections)}")
        conn = self.connections[name]
        return ConnectionSettings(
            name=name,
            base_url=conn.base_url,
            credentials=dict(conn.credentials),
            options=self.options(name),
            timeout_s=conn.timeout_s,
            max_concurrency=conn.max_concurrency,
            max_retries=conn.max_retries,
            rate_limit=RateLimit(conn.rate_limit.requests, conn.rate_limit.per_seconds) if conn.rate_limit else None,
        )

    def mapping(self, name: str) -> FieldMapping:
        """The field mapping of connection ``name``: the shipped
        one or the connection's ``mapping`` file, with its ``mapping_overrides``."""
        if name not in self._mappings:
            from sync.mapping import load_mapping

            conn = self.connections[name]
            override = dict(conn.mapping_overrides or {})
            key_to_id = conn.options.get("custom_field_ids")
            if conn.platform == "gohighlevel" and isinstance(key_to_id, dict) and key_to_id:
                # The location's custom field ids (key -> id) name the ids read back as keys.
                fields = dict(override.get("fields") or {})
                entry = dict(fields.get("custom.*") or {})
                entry["ids"] = {**{str(v): str(k) for k, v in key_to_id.items()}, **(entry.get("ids") or {})}
                fields["custom.*"] = entry
                override["fields"] = fields
            self._mappings[name] = load_mapping(
                conn.platform,
                override=override or None,
                path=conn.mapping,
                default_region=self.default_phone_region,
            )
        return self._mappings[name]

    def secret_values(self) -> list[str]:
        """Every secret value (credentials, a store URL password), for log redaction."""
        out = [
            s.get_secret_value()
            for c in self.connections.values()
            for k, s in c.credentials.items()
            if k.removeprefix("oauth.") not in _OAUTH_PLAIN
        ]
        password = urlsplit(self._store_url).password
        if password:
            out.append(password)
        if self.web.auth_token is not None:
            out.append(self.web.auth_token.get_secret_value())
        return [s for s in out if s]


# --------------------------------------------------------------------------- loading


def load_config(path: Path | str) -> Config:
    """Load, expand, validate and cross-check a YAML config file. Raises ConfigError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"(top level): expected a mapping of options, found {_kind(doc)}")
    base_dir = path.resolve().parent
    warnings: list[str] = []
    doc = _expand(doc, (), base_dir, warnings)
    try:
        config = Config.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError("\n".join(_explain(err) for err in exc.errors())) from None
    config._path = path.resolve()
    config._store_url = _store_url(config, base_dir)
    config._warnings = warnings
    _cross_check(config, base_dir)
    from sync.logs import get_logger, register_secret

    for secret in config.secret_values():
        register_secret(secret)
    log = get_logger("contactsync.config")
    for warning in config._warnings:
        log.warning("config_warning", detail=warning)
    return config


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing"}.get(
        type(value), type(value).__name__
    )


def _dotted(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _is_secret_path(loc: tuple[Any, ...]) -> bool:
    return (
        (len(loc) >= 3 and loc[0] == "connections" and loc[2] == "credentials")
        or loc[:2] == ("store", "url")
        or loc[:2] == ("web", "auth_token")
    )


def _explain(err: Any) -> str:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("function-", "constrained-"))))
    # pydantic appends the validator/union tag to loc for some errors; keep only real keys.
    loc = tuple(p for p in loc if p not in ("str", "int", "float", "bool", "list[str]"))
    where = _dotted(loc)
    kind = err["type"]
    value = err.get("input")
    if _is_secret_path(loc):
        found = "a value (hidden: it is a secret)" if value is not None else "nothing"
    elif isinstance(value, (dict, list)) or value is None:
        found = _kind(value)
    else:
        text = repr(value)
        found = text if len(text) <= 60 else text[:57] + "..."
    if kind == "missing":
        return f"{where}: expected a value, found nothing (this key is required)"
    if kind == "extra_forbidden":
        return f"{where}: unknown option (found {found}); see config.example.yaml for the options here"
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Input should be ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    return f"{where}: expected {msg}, found {found}"


def _expand(node: Any, loc: tuple[Any, ...], base_dir: Path, warnings: list[str]) -> Any:
    """Expand ``${VAR}`` references in strings; resolve credentials (env, file, literal)."""
    if len(loc) == 3 and loc[0] == "connections" and loc[2] == "credentials" and isinstance(node, dict):
        node = _flatten_oauth(node, loc, base_dir, warnings)
    if len(loc) == 4 and loc[0] == "connections" and loc[2] == "credentials":
        if isinstance(loc[3], str) and loc[3].startswith("oauth.") and not isinstance(node, dict):
            return node  # flattened below (already expanded)
        return _secret(node, loc, base_dir, warnings)
    if loc == ("web", "auth_token"):
        return _secret(node, loc, base_dir, warnings)
    if len(loc) == 3 and loc[0] == "webhooks" and str(loc[2]).endswith("_public_key") and isinstance(node, dict):
        return _secret(node, loc, base_dir, warnings)  # {file: path}: a key file (public, not secret)
    if isinstance(node, dict):
        return {k: _expand(v, (*loc, k), base_dir, warnings) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, (*loc, i), base_dir, warnings) for i, v in enumerate(node)]
    if isinstance(node, str):
        return _interpolate(node, loc, secret=False)
    return node


# OAuth settings that are not secrets (a literal is fine for them).
_OAUTH_PLAIN = ("user_type", "company_id", "app_id", "agency")


def _flatten_oauth(node: dict[str, Any], loc: tuple[Any, ...], base_dir: Path, warnings: list[str]) -> dict[str, Any]:
    """``credentials: {oauth: {client_id: ..., ...}}`` (GoHighLevel marketplace mode) becomes the
    flat credentials ``oauth.client_id`` and so on, each expanded like any credential
    (``client_id``/``client_secret`` as secrets; the other keys as plain values)."""
    oauth = node.get("oauth")
    if not isinstance(oauth, dict) or set(oauth) == {"file"}:
        return node
    out = {k: v for k, v in node.items() if k != "oauth"}
    for key, value in oauth.items():
        where = (*loc, f"oauth.{key}")
        if key in _OAUTH_PLAIN and isinstance(value, (str, int)) and not isinstance(value, bool):
            out[f"oauth.{key}"] = _interpolate(str(value), where, secret=False)
        else:
            out[f"oauth.{key}"] = _secret(value, where, base_dir, warnings)
    return out


def _interpolate(text: str, loc: tuple[Any, ...], *, secret: bool) -> str:
    def sub(match: re.Match[str]) -> str:
        var, default = match.group(1), match.group(2)
        value = os.environ.get(var)
        if value is None or (value == "" and default is not None):
            if default is None:
                what = "a secret" if secret else "a value"
                raise ConfigError(
                    f"{_dotted(loc)}: expected environment variable {var} to be set ({what} referenced as ${{{var}}}), found it unset"
                )
            return default
        return value

    return _REF.sub(sub, text)


def _secret(node: Any, loc: tuple[Any, ...], base_dir: Path, warnings: list[str]) -> str:
    where = _dotted(loc)
    if isinstance(node, dict):
        if set(node) != {"file"} or not isinstance(node["file"], str):
            raise ConfigError(
                f"{where}: expected ${{ENV_VAR}}, ${{ENV_VAR:-default}} or {{file: /path}}, found a mapping with keys {sorted(node)}"
            )
        file = Path(_interpolate(node["file"], loc, secret=False))
        file = file if file.is_absolute() else base_dir / file
        try:
            value = file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{where}: expected a readable secret file, found {file} ({exc.strerror})") from None
        if not value:
            raise ConfigError(f"{where}: expected a secret in {file}, found an empty file")
        return value
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        node = str(node)
    if not isinstance(node, str):
        raise ConfigError(
            f"{where}: expected ${{ENV_VAR}}, ${{ENV_VAR:-default}} or {{file: /path}}, found {_kind(node)}"
        )
    if not _REF.search(node):
        warnings.append(f"{where}: a literal secret in the config file; prefer ${{ENV_VAR}} or {{file: /path}}")
    value = _interpolate(node, loc, secret=True)
    if not value.strip():
        raise ConfigError(f"{where}: expected a non-empty secret, found an empty value")
    return value


def _store_url(config: Config, base_dir: Path) -> str:
    env = os.environ.get(DATABASE_URL_ENV)
    if env:
        return env
    if config.store.url is None:
        return f"sqlite:///{base_dir / 'contactsync.db'}"
    url = config.store.url.get_secret_value()
    if "://" not in url:
        raise ConfigError(
            "store.url: expected a database URL such as sqlite:///contactsync.db or postgresql+psycopg://user@host/db, found something else"
        )
    scheme, _, rest = url.partition(":///")
    # A relative SQLite path is relative to the config file, not the working directory.
    if (
        scheme.startswith("sqlite")
        and rest
        and not rest.startswith("/")
        and rest != ":memory:"
        and not url.startswith(f"{scheme}:////")
    ):
        return f"{scheme}:///{base_dir / rest}"
    return url


def mask_url(url: str) -> str:
    """A URL with its password (if any) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    if not parts.password:
        return url
    user = quote(parts.username or "", safe="")
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def _cross_check(config: Config, base_dir: Path) -> None:
    names = list(config.connections)
    known = ", ".join(names)
    for name, conn in config.connections.items():
        where = f"connections.{name}"
        problems = settings_problems(
            options_model(conn.platform), credentials_model(conn.platform), conn.options, conn.credentials
        )
        if problems:
            raise ConfigError("\n".join(f"{where}.{p.key}: expected {p.expected}, found {p.found}" for p in problems))
        if conn.platform == "gohighlevel":
            from connectors.gohighlevel.settings import custom_field_warnings

            conflict_fields = {k: v for k, v in config.conflicts.fields.items() if k.startswith("custom.")}
            config._warnings += custom_field_warnings(where, conn.options, conn.mapping_overrides, conflict_fields)
        unknown = options_model(conn.platform).unknown(conn.options)
        if unknown:
            config._warnings.append(
                f"{where}.options: unknown option(s) {unknown} for {conn.platform}, passed on as-is"
            )
        if conn.mapping is not None:
            mapping = conn.mapping if conn.mapping.is_absolute() else base_dir / conn.mapping
            if not mapping.is_file():
                raise ConfigError(f"{where}.mapping: expected a mapping YAML file, found no file at {mapping}")
            object.__setattr__(conn, "mapping", mapping)
        from sync.mapping import MappingError

        try:
            config.mapping(name)
        except MappingError as exc:
            key = "mapping_overrides" if conn.mapping_overrides else "mapping"
            raise ConfigError(f"{where}.{key}: expected a field mapping that round-trips, found: {exc}") from None
    for i, name in enumerate(config.conflicts.priority):
        if name not in config.connections:
            raise ConfigError(f"conflicts.priority[{i}]: expected a connection name ({known}), found {name!r}")
    uses_priority = config.conflicts.policy == "priority" or "priority" in config.conflicts.fields.values()
    if uses_priority and not config.conflicts.priority:
        raise ConfigError(
            "conflicts.priority: expected a list of connection names (the priority policy is used), found nothing"
        )
    for field, policy in config.conflicts.fields.items():
        if not (field == "custom.*" or is_known_field(field)):
            raise ConfigError(
                f"conflicts.fields.{field}: expected a canonical field name ({', '.join(FIELD_NAMES)}, custom.<key>, custom.*), found {field!r}"
            )
        if policy == "union" and field_kind(field) not in ("set", "list"):
            raise ConfigError(
                f"conflicts.fields.{field}: expected newest or priority (union applies to sets and lists), found 'union'"
            )
    for pname, profile in config.profiles.items():
        if not _NAME.match(pname):
            raise ConfigError(
                f"profiles.{pname}: expected a profile name of letters, digits, '_' and '-', found {pname!r}"
            )
        for i, name in enumerate(profile.connections or []):
            if name not in config.connections:
                raise ConfigError(
                    f"profiles.{pname}.connections[{i}]: expected a connection name ({known}), found {name!r}"
                )
            if not config.connections[name].enabled:
                raise ConfigError(
                    f"profiles.{pname}.connections[{i}]: expected an enabled connection, found {name!r} (enabled: false)"
                )
        if profile.connections is not None and not profile.connections:
            raise ConfigError(f"profiles.{pname}.connections: expected at least one connection, found an empty list")
    if not config.enabled_connections():
        raise ConfigError(f"connections: expected at least one enabled connection, found none enabled ({known})")
    hooks = config.webhooks.gohighlevel
    if config.http.enabled and hooks.enabled and not (hooks.ed25519_public_key or hooks.rsa_public_key):
        config._warnings.append("webhooks.gohighlevel: no public key configured: every delivery will be refused (401)")


# --------------------------------------------------------------------------- summary


def summarize(config: Config) -> str:
    """A readable summary of what this config will sync: store, connections (platform, URL,
    mapped fields), profiles and policies. Never contains a secret."""
    lines = [
        f"store: {config.store_url_display}",
        f"default phone region: {config.default_phone_region}",
        "connections:",
    ]
    for name, conn in config.connections.items():
        state = "" if conn.enabled else " (disabled)"
        lines.append(f"  {name}: {conn.platform} at {mask_url(conn.base_url)}{state}")
        lines.append(f"    credentials: {', '.join(sorted(conn.credentials)) or 'none'} (values hidden)")
        opts = config.options(name)
        if opts:
            lines.append("    options: " + ", ".join(f"{k}={v}" for k, v in sorted(opts.items())))
        mapping = config.mapping(name)
        src = str(conn.mapping) if conn.mapping else f"shipped mappings/{conn.platform}.yaml"
        if conn.mapping_overrides:
            src += " + overrides"
        lines.append(f"    mapping: {src}")
        both = sorted(mapping.readable & mapping.writable)
        only_in = sorted(mapping.readable - mapping.writable)
        only_out = sorted(mapping.writable - mapping.readable)
        lines.append(f"    fields synced both ways: {', '.join(both) or 'none'}")
        if only_in:
            lines.append(f"    fields read only: {', '.join(only_in)}")
        if only_out:
            lines.append(f"    fields written only: {', '.join(only_out)}")
        if mapping.endpoint_fields:
            lines.append(f"    written through separate calls: {', '.join(sorted(mapping.endpoint_fields))}")
        limit = conn.rate_limit
        budget = f"{limit.requests}/{limit.per_seconds:g}s (override)" if limit else "documented"
        lines.append(
            f"    rate limit: {budget}; timeout {conn.timeout_s:g}s; concurrency {conn.max_concurrency}; retries {conn.max_retries}"
        )
    lines.append("profiles:")
    for pname, profile in config.effective_profiles().items():
        sched = profile.schedule
        when = f"every {sched.interval_seconds:g}s" if sched.interval_seconds else f"cron '{sched.cron}' (UTC)"
        if sched.adaptive:
            when += (
                f", adaptive polls every {sched.min_interval_s:g}-{sched.max_interval_s:g}s"
                f" (at most {sched.max_budget_share:.0%} of a limit)"
            )
        lines.append(
            f"  {pname}: {', '.join(profile.connections or [])} {when}, misfire grace {profile.misfire_grace_seconds}s"
        )
    m, c = config.matching, config.conflicts
    keys = ", ".join(f"{k.kind} ({k.strength})" for k in m.keys)
    lines.append(f"matching: keys {keys}; duplicates: {m.duplicates}")
    overrides = ", ".join(f"{f}={p}" for f, p in sorted(c.fields.items()))
    lines.append(
        f"conflicts: {c.policy}"
        + (f", priority {' > '.join(c.priority)}" if c.priority else "")
        + (f", per field {overrides}" if overrides else "")
        + f"; empty values {'erase' if c.empty_erases else 'never erase'}"
    )
    lines.append(
        f"deletes: {config.deletes.policy}"
        + (f" (tag '{config.deletes.tag}')" if config.deletes.policy == "tag" else "")
    )
    lines.append(
        f"merges without native merge: {config.merges.fallback}"
        + (f" (tag '{config.merges.tag}')" if config.merges.fallback == "tag" else "")
    )
    lines.append(f"logging: {config.logging.level}, format {config.logging.format}")
    for warning in config.warnings:
        lines.append(f"warning: {warning}")
    return "\n".join(lines)
