"""Configuration: environment (RELAY_...) over a TOML file over defaults, parsed once.

Nested sections use a double underscore in the environment: RELAY_REDIS__URL,
RELAY_LIVEKIT__API_SECRET. Lists take JSON: RELAY_ROOMS='["a","b"]'.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from relay.contract.kinds import EventKind
from relay.errors import ConfigError

ENV_PREFIX = "RELAY_"
ENV_NESTED_DELIMITER = "__"
INGEST_SECRET_MIN_CHARS = 32


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LiveKitSettings(_Section):
    url: str = "ws://127.0.0.1:7880"
    api_key: str = ""
    api_secret: SecretStr = SecretStr("")
    # Identity template for minted observer tokens: {host}, {worker} (RELAY_WORKER_INDEX),
    # {pid}, {rand} (4 hex digits drawn once per process), {n} (a per-process counter).
    # Two observers of one room must not share an identity: LiveKit disconnects the first.
    observer_identity: str = "relay-{host}-{worker}-{pid}-{n}"
    observer_token_ttl_s: int = Field(default=6 * 3600, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    # After the SDK gives up reconnecting, the relay re-joins with capped backoff.
    rejoin_backoff_initial_s: float = Field(default=0.5, gt=0)
    rejoin_backoff_max_s: float = Field(default=30.0, gt=0)
    # Guarded fixes of the SDK's receive path (relay/observer/sdk_internals.py): each is
    # checked against the SDK loaded and falls back to the SDK's own behaviour.
    sdk_fixes: bool = True
    # The SDK's native log records: "native" keeps them in the native library (it writes
    # those RUST_LOG selects, warnings by default, to stderr, which relay turns into its
    # JSON records: relay/native_logs.py), about 100 us less CPU per packet; "relay" lets
    # the SDK hand every record to Python (~1.9 batches per data packet, libwebrtc's debug
    # dumps, parsed to be dropped). Also the fallback when the SDK does not match.
    native_logs: Literal["relay", "native"] = "native"

    @field_validator("url")
    @classmethod
    def _livekit_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not a LiveKit URL; expected ws://host:7880 or wss://host")
        return url

    @property
    def can_mint_tokens(self) -> bool:
        """With the API key and secret the observer mints its own tokens."""
        return bool(self.api_key and self.api_secret.get_secret_value())


class RedisSettings(_Section):
    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    prefix: str = "relay"
    # Key templates; {prefix} and {room} are filled in. Braces around the room keep a
    # room's keys in one Redis Cluster slot.
    events_key: str = "{prefix}:events"
    room_key: str = "{prefix}:room:{{{room}}}"
    dlq_key: str = "{prefix}:dlq"
    events_maxlen: int = Field(default=1_000_000, gt=0)
    room_maxlen: int = Field(default=10_000, gt=0)
    dlq_maxlen: int = Field(default=100_000, gt=0)
    socket_timeout_s: float = Field(default=5.0, gt=0)
    # TLS (a rediss:// URL): the CA that signed the server's certificate (default: the
    # system's), and a client certificate and key if the server asks for one.
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Redis Sentinel: each sentinel's "host:port" and the master's name in their
    # configuration; the URL then gives only the credentials, database and TLS.
    sentinels: tuple[str, ...] = ()
    sentinel_service: str = ""
    # Redis Cluster: the URL names any node; the others are discovered.
    cluster: bool = False
    # Acknowledge a batch only once this many replicas have it (WAIT): an event the
    # pipeline accepted then survives a failover. 0: the master's reply is enough.
    wait_replicas: int = Field(default=0, ge=0)
    wait_timeout_s: float = Field(default=1.0, gt=0)
    # No entry id written twice to a stream (relay/sinks/write_guard.py): `idmp` (XADD ...
    # IDMP, Redis 8.6+), `script` (a guard key per id, in a Lua script with the XADD),
    # `off`; `auto` picks idmp where the server has it. The script's guards last
    # dedupe_window_s: a repeat later than that is written again.
    write_guard: Literal["auto", "idmp", "script", "off"] = "auto"
    dedupe_window_s: float = Field(default=900.0, gt=0)

    @field_validator("sentinels")
    @classmethod
    def _host_ports(cls, sentinels: tuple[str, ...]) -> tuple[str, ...]:
        for sentinel in sentinels:
            host, _, port = sentinel.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{sentinel!r} is not host:port (e.g. sentinel-0:26379)")
        return sentinels

    @field_validator("tls_ca_file", "tls_cert_file", "tls_key_file")
    @classmethod
    def _readable(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise ValueError(f"{path}: no such file (a PEM file is expected)")
        return path

    @property
    def tls(self) -> bool:
        return self.url.get_secret_value().startswith("rediss://")

    @field_validator("url")
    @classmethod
    def _redis_url(cls, url: SecretStr) -> SecretStr:
        parts = urlsplit(url.get_secret_value())
        network = parts.scheme in ("redis", "rediss") and bool(parts.hostname)
        if not (network or (parts.scheme == "unix" and parts.path)):
            # The value may hold a password: it is not repeated.
            raise ValueError("not a Redis URL; expected redis://host:6379/0 (rediss:// for TLS)")
        return url


class PipelineSettings(_Section):
    # Raw items waiting for a room's decoder; a full queue drops (reason="room_queue_full").
    room_queue_max: int = Field(default=10_000, gt=0)
    # Accepted events not yet acknowledged; a full buffer applies backpressure.
    buffer_max_events: int = Field(default=100_000, gt=0)
    batch_max_events: int = Field(default=500, gt=0)
    # How long a partial batch waits for more events; 0: none. Batches form on their own
    # while a write is in flight (what arrives meanwhile goes in the next one), so a wait
    # only adds latency and a timer per batch (bench/e2e.py: the p99 at 300 events/s).
    flush_interval_s: float = Field(default=0.0, ge=0)
    retry_initial_s: float = Field(default=0.1, gt=0)
    retry_max_s: float = Field(default=5.0, gt=0)
    # Payloads above this go to the DLQ (truncated) instead of the event streams.
    max_payload_bytes: int = Field(default=64 * 1024, gt=0)


class LimitsSettings(_Section):
    """Per-room and per-participant rate limits and byte caps, applied by the observer's
    SDK handlers before any decoding (docs/delivery.md, "Rate limits").

    A data packet, a text stream chunk, a legacy transcription packet or an attribute
    change costs one event and its payload bytes. The defaults are far above what a
    conversation sends: the demo and golden sessions (LiveAvatar, LiveKit Agents,
    LiveLayer) send a few events/s per participant, tens at a transcript's peak (chunks
    per word), a few KB/s. The load benchmarks' single publishers send 200 (bench/e2e.py)
    to 500 (bench/rooms.py) events/s, so a participant gets 1000/s and a room 2000/s
    (near what one process decodes on the 2-core rig): only a flood hits them.
    """

    enabled: bool = True
    room_events_per_s: float = Field(default=2000.0, gt=0)
    room_events_burst: int = Field(default=10_000, gt=0)
    room_bytes_per_s: float = Field(default=4 * 1024 * 1024, gt=0)
    room_bytes_burst: int = Field(default=16 * 1024 * 1024, gt=0)
    participant_events_per_s: float = Field(default=1000.0, gt=0)
    participant_events_burst: int = Field(default=5000, gt=0)
    participant_bytes_per_s: float = Field(default=512 * 1024, gt=0)
    participant_bytes_burst: int = Field(default=2 * 1024 * 1024, gt=0)
    # What was dropped is logged (room_rate_limited) once a period per room, never per packet.
    summary_period_s: float = Field(default=10.0, gt=0)
    # Participants of a room whose buckets are kept (least recently seen go).
    max_participants: int = Field(default=1024, gt=0)


class HttpSettings(_Section):
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)
    # Bearer token for the admin API; empty disables the admin API.
    admin_token: SecretStr = SecretStr("")


class AnalyticsSettings(_Section):
    # `relay analytics` (relay/analytics): a consumer group on the events stream.
    group: str = Field(default="analytics", min_length=1)
    consumer: str = ""  # default: the host name (stable across restarts of one pod)
    utterance_timeout_s: float = Field(default=10.0, gt=0)
    participants_idle_s: float = Field(default=30.0, gt=0)
    summary_ttl_s: int = Field(default=7 * 24 * 3600, gt=0)
    sweep_interval_s: float = Field(default=1.0, gt=0)
    # The lease of a room's assembly (relay/analytics/rooms.py): a process killed without
    # SIGTERM leaves its rooms to the others this long after its last renewal.
    lease_ttl_s: float = Field(default=10.0, gt=0)
    # A group entry a dead process read and did not acknowledge is taken over after this
    # (its rooms' registration and their owners' wake-up; the events are in the rooms).
    claim_idle_ms: int = Field(default=10_000, gt=0)
    # `relay analytics` serves GET /metrics here (its own metrics); 0: not at all.
    metrics_port: int = Field(default=8081, ge=0, le=65535)
    # One trace per session summary over OTLP/HTTP (the `otel` extra), configured by the
    # standard OTEL_EXPORTER_OTLP_* and OTEL_SERVICE_NAME variables (docs/analytics.md).
    otel: bool = False


class IngestSettings(_Section):
    """`POST /v1/ingest`: what browsers forward (docs/ingest.md). Off while `secret` is empty."""

    # HS256 key of the ingest tokens the customer's backend mints (relay ingest-token).
    secret: SecretStr = SecretStr("")
    # Origins a browser may post from ("*": any); an empty list refuses every origin.
    allowed_origins: tuple[str, ...] = ()
    # Below the browsers' 64 KiB keepalive/beacon budget, with room for headers.
    max_body_bytes: int = Field(default=60 * 1024, gt=0, le=64 * 1024)
    max_items: int = Field(default=200, gt=0)
    # Per token (room + session): a bucket of `burst_items`, refilled at this rate.
    rate_items_per_s: float = Field(default=100.0, gt=0)
    burst_items: int = Field(default=1000, gt=0)
    # Ingest sessions with a decode state and a dedupe window (least recently used go).
    max_sessions: int = Field(default=10_000, gt=0)
    # Client sequence numbers remembered per page (a retried batch is answered duplicate).
    dedupe_window: int = Field(default=4096, gt=0)
    # A client receive time further than this from the relay's clock is replaced by it.
    max_clock_skew_s: float = Field(default=300.0, gt=0)

    @property
    def enabled(self) -> bool:
        return bool(self.secret.get_secret_value())


class JournalSettings(_Section):
    """The on-disk journal (docs/delivery.md, "The journal"): off while `path` is empty.

    An accepted event is appended before `submit()` returns and stays until every sink
    acknowledged it; a restarted relay writes what was left, in order, with its id, seq
    and epoch (the write guard skips what the sinks had already). Each worker process
    journals in its own directory under `path` (`worker-<index>`).
    """

    path: str = ""
    # "interval": appends reach the kernel before submit() returns (a kill -9 loses
    # nothing) and are fsynced every fsync_interval_ms (a power or node loss loses at most
    # that window); "always": submit() also waits for the fsync that covers it (group
    # commit: one fsync covers every append made while the last one ran).
    fsync: Literal["interval", "always"] = "interval"
    fsync_interval_ms: int = Field(default=100, gt=0)
    # What the journal holds at most on disk (less when the disk has less free space).
    max_bytes: int = Field(default=128 * 1024 * 1024, gt=0)
    segment_bytes: int = Field(default=8 * 1024 * 1024, ge=4096)
    # At capacity: "shed" refuses new events (reason journal_full); "block" makes submit()
    # wait for room, the pipeline's backpressure. Above shed_at of the capacity, the kinds
    # of shed_kinds are refused first (reason journal_shed), keeping room for transcripts.
    full_policy: Literal["shed", "block"] = "shed"
    shed_at: float = Field(default=0.8, gt=0, le=1)
    shed_kinds: tuple[EventKind, ...] = ("speakers.active",)

    @property
    def enabled(self) -> bool:
        return bool(self.path)


class DiscoverySettings(_Section):
    """Scale-out (relay/discovery): the wanted set in Redis, leases, webhooks, ListRooms.

    Off by default: each process then observes what its static list and admin API name."""

    enabled: bool = False
    # A room's lease; renewed every lease_ttl_s / 3. A worker stops writing a room it could
    # not renew at expiry minus lease_margin_s (clock skew, a pause).
    lease_ttl_s: float = Field(default=15.0, gt=0)
    lease_margin_s: float = Field(default=2.0, ge=0)
    # Each pick-up round waits up to this long (random): no herd when a replica dies.
    pickup_jitter_s: float = Field(default=1.0, ge=0)
    # Before its first pick-up a process registers and waits this long, so replicas
    # started together all count each other (else the first to tick takes more than its
    # share and hands rooms back mid-conversation seconds later); 0: none.
    startup_settle_s: float = Field(default=2.0, ge=0)
    # A process above its share hands back at most this many rooms a tick, newest first,
    # to a process below it (a replica that started after the others); 0: never.
    rebalance_per_tick: int = Field(default=2, ge=0)
    # A room handed back is handed over make-before-break: the taker joins first and the
    # giver leaves once it has (relay/discovery/handover.py); if no taker joined within
    # this long the giver leaves anyway (a gap, reported). 0: leave first.
    handover_timeout_s: float = Field(default=10.0, ge=0)
    # A taker holds at most this many of a room's entries until it wins the lease.
    shadow_max_entries: int = Field(default=10_000, gt=0)
    # Hot standby: each process also observes rooms other processes own (up to 2x its share),
    # keeping what arrived in the last standby_keep_s seconds; when an owner dies its
    # standby takes the lease and writes what the stream lacks. Costs a second observer
    # per room. standby_keep_s must outlast a lease (the time until a death is seen)
    # plus what an owner may take to write.
    standby: bool = False
    standby_keep_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _standby_outlasts_a_lease(self) -> DiscoverySettings:
        if self.standby and self.standby_keep_s <= self.lease_ttl_s:
            raise ValueError(
                f"discovery.standby_keep_s ({self.standby_keep_s:g}) must be longer than "
                f"discovery.lease_ttl_s ({self.lease_ttl_s:g}): a standby keeps what an owner "
                "that died may not have written"
            )
        return self

    reconcile_interval_s: float = Field(default=30.0, gt=0)
    webhook_max_body_bytes: int = Field(default=64 * 1024, gt=0)
    # Room filter: names matching any `include` (glob, or /regex/), none of `exclude`;
    # `metadata` keys that the room's JSON metadata must carry with these values.
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    metadata: dict[str, str] = Field(default_factory=dict)


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        frozen=True,
        extra="forbid",
    )

    livekit: LiveKitSettings = LiveKitSettings()
    redis: RedisSettings = RedisSettings()
    pipeline: PipelineSettings = PipelineSettings()
    limits: LimitsSettings = LimitsSettings()
    http: HttpSettings = HttpSettings()
    ingest: IngestSettings = IngestSettings()
    log: LogSettings = LogSettings()
    analytics: AnalyticsSettings = AnalyticsSettings()
    discovery: DiscoverySettings = DiscoverySettings()
    journal: JournalSettings = JournalSettings()
    # Rooms observed from start (names; tokens are minted with the API key/secret).
    rooms: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    sinks: tuple[Literal["redis", "stdout"], ...] = Field(default=("redis",), min_length=1)
    # Rooms one process observes at most: the SDK's per-event cost grows with rooms per
    # process (bench/rooms.py), so scale out with processes, not rooms.
    max_rooms: int = Field(default=50, gt=0)
    # Worker processes per pod (`relay run --workers N`, relay/supervisor.py); above 1
    # needs discovery.enabled: each worker holds its own leases and max_rooms.
    workers: int = Field(default=1, ge=1, le=64)
    # This process's slot (0..workers-1): the supervisor sets it for each worker (the
    # `worker` label of /metrics, {worker} of livekit.observer_identity). Set it yourself
    # to tell apart processes that share a host name and pid numbers.
    worker_index: int = Field(default=0, ge=0, le=63)
    # SIGTERM: leave rooms, flush and exit within this (keep below the pod's grace period).
    shutdown_grace_s: float = Field(default=20.0, gt=0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = _TOML_FILE.get("path")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


# The TOML path for the one load in progress (pydantic-settings reads sources at init).
_TOML_FILE: dict[str, Path | None] = {"path": None}


def load_settings(
    config_file: Path | None = None, *, rooms_option: str | None = None, **overrides: Any
) -> Settings:
    """Parse settings once; a bad value raises ConfigError, one line naming the variable.

    `rooms_option`: the command-line option the rooms came from (`--room`), named in
    errors instead of RELAY_ROOMS."""
    if config_file is not None:
        _read_toml(config_file)  # its own error first: pydantic-settings words it poorly
    _TOML_FILE["path"] = config_file
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems = [f"{_name(*error['loc'])}: {_message(error['msg'])}" for error in exc.errors()]
        raise ConfigError(_describe(problems)) from None
    except SettingsError as exc:  # a variable that should hold JSON does not
        raise ConfigError(_describe([_unparsable(exc)])) from None
    finally:
        _TOML_FILE["path"] = None
    if problems := _inconsistencies(settings, rooms_option):
        raise ConfigError(_describe(problems))
    return settings


def _read_toml(path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"config file {path}: not found (give the path of a TOML file)")
    try:
        tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}: cannot be read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML: {exc}") from None


def _describe(problems: list[str]) -> str:
    """One line, every problem in it (an error must not need scrolling)."""
    return "invalid configuration: " + "; ".join(problems)


def _message(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def _unparsable(exc: SettingsError) -> str:
    match = re.search(r'field "(\w+)"', str(exc))
    field = match.group(1) if match else None
    if field is None:
        return f"an environment variable could not be parsed: {exc}"
    example = " e.g. RELAY_SINKS='[\"stdout\"]'" if field in ("sinks", "rooms") else ""
    return f"{_name(field)}: not valid JSON; lists and sections take JSON,{example}"


def _name(*path: str | int) -> str:
    """A setting as the user writes it: `RELAY_REDIS__URL (toml: redis.url)`."""
    keys = [part for part in path if isinstance(part, str)]
    toml = ".".join(keys) + "".join(f"[{part}]" for part in path if isinstance(part, int))
    return f"{ENV_PREFIX}{ENV_NESTED_DELIMITER.join(keys).upper()} (toml: {toml})"


# Key and identity templates with the fields each may use, checked with sample values.
_TEMPLATES: dict[tuple[str, str], dict[str, object]] = {
    ("livekit", "observer_identity"): {"host": "h", "worker": 0, "pid": 1, "rand": "0a1b", "n": 1},
    ("redis", "events_key"): {"prefix": "p"},
    ("redis", "room_key"): {"prefix": "p", "room": "r"},
    ("redis", "dlq_key"): {"prefix": "p"},
}


def _inconsistencies(s: Settings, rooms_option: str | None = None) -> list[str]:
    """What no single field can check: settings that contradict each other."""
    problems = []
    lk, pipeline = s.livekit, s.pipeline
    if s.rooms and not lk.can_mint_tokens:
        missing = [
            _name("livekit", key)
            for key, value in (("api_key", lk.api_key), ("api_secret", lk.api_secret))
            if not (value.get_secret_value() if isinstance(value, SecretStr) else value)
        ]
        rooms = rooms_option or _name("rooms")
        problems.append(
            f"{' and '.join(missing)}: not set; required to observe {rooms} (the relay "
            "mints its own tokens with the API key and secret)"
        )
    if len(set(s.rooms)) > s.max_rooms:
        problems.append(f"{_name('rooms')}: more rooms than {_name('max_rooms')} = {s.max_rooms}")
    if lk.rejoin_backoff_max_s < lk.rejoin_backoff_initial_s:
        problems.append(
            f"{_name('livekit', 'rejoin_backoff_max_s')}: below rejoin_backoff_initial_s"
        )
    if 0 < len(s.ingest.secret.get_secret_value()) < INGEST_SECRET_MIN_CHARS:
        problems.append(
            f"{_name('ingest', 'secret')}: at least {INGEST_SECRET_MIN_CHARS} characters "
            "(an HS256 key; e.g. `openssl rand -hex 32`)"
        )
    if s.workers > 1 and not s.discovery.enabled:
        problems.append(
            f"{_name('workers')}: above 1 needs {_name('discovery', 'enabled')} (each worker "
            "takes its rooms by lease; without leases every worker would observe them all)"
        )
    if s.discovery.lease_margin_s * 2 >= s.discovery.lease_ttl_s:
        problems.append(f"{_name('discovery', 'lease_margin_s')}: must be below lease_ttl_s / 2")
    problems += _redis_problems(s.redis)
    if pipeline.retry_max_s < pipeline.retry_initial_s:
        problems.append(f"{_name('pipeline', 'retry_max_s')}: below retry_initial_s")
    for scope in ("room", "participant"):
        if getattr(s.limits, f"{scope}_bytes_burst") < pipeline.max_payload_bytes:
            # A payload above the burst would never fit: every one of them dropped.
            problems.append(
                f"{_name('limits', f'{scope}_bytes_burst')}: below pipeline.max_payload_bytes"
            )
    return problems + _template_problems(s)


def _template_problems(s: Settings) -> list[str]:
    problems = []
    for (section, key), fields in _TEMPLATES.items():
        template: str = getattr(getattr(s, section), key)
        allowed = ", ".join("{" + field + "}" for field in fields)
        try:
            filled = template.format(**fields)
        except KeyError as exc:
            unknown = "{" + str(exc.args[0]) + "}"
            problems.append(f"{_name(section, key)}: unknown placeholder {unknown}; use {allowed}")
            continue
        except (IndexError, ValueError, AttributeError, TypeError) as exc:
            problems.append(f"{_name(section, key)}: bad template ({exc!r}); it may use {allowed}")
            continue
        if key == "room_key" and filled == template.format(**{**fields, "room": "other"}):
            problems.append(f"{_name(section, key)}: must use {{room}} (one stream a room)")
        if key == "observer_identity" and s.workers > 1 and not _per_process(template, fields):
            problems.append(
                f"{_name(section, key)}: with {_name('workers')} above 1 it must use {{worker}}, "
                "{pid} or {rand} (workers would join rooms under one identity, and LiveKit "
                "disconnects the first of two participants with the same identity)"
            )
    return problems


def _per_process(template: str, fields: dict[str, object]) -> bool:
    """Whether the identity template differs between two workers of one host."""
    other = {**fields, "worker": 1, "pid": 2, "rand": "2c3d"}
    return template.format(**fields) != template.format(**other)


def _redis_problems(redis: RedisSettings) -> list[str]:
    problems = []
    tls_files = ("tls_ca_file", "tls_cert_file", "tls_key_file")
    given = [key for key in tls_files if getattr(redis, key) is not None]
    if given and not redis.tls:
        names = ", ".join(_name("redis", key) for key in given)
        problems.append(f"{names}: used only with TLS; make {_name('redis', 'url')} rediss://")
    if bool(redis.sentinels) != bool(redis.sentinel_service):
        problems.append(
            f"{_name('redis', 'sentinels')} and {_name('redis', 'sentinel_service')}: "
            "Sentinel needs both (the sentinels' addresses and the master's name)"
        )
    if redis.wait_replicas and redis.wait_timeout_s >= redis.socket_timeout_s:
        problems.append(
            f"{_name('redis', 'wait_timeout_s')}: must be below socket_timeout_s "
            f"({redis.socket_timeout_s:g}), or the socket times out before WAIT answers"
        )
    if redis.wait_replicas and redis.cluster:
        problems.append(
            f"{_name('redis', 'wait_replicas')}: not supported with "
            f"{_name('redis', 'cluster')} (a Cluster batch spans nodes)"
        )
    if redis.sentinels and redis.cluster:
        problems.append(
            f"{_name('redis', 'cluster')}: a Cluster has no sentinels; unset one of "
            f"{_name('redis', 'cluster')} and {_name('redis', 'sentinels')}"
        )
    if (redis.tls_cert_file is None) != (redis.tls_key_file is None):
        problems.append(
            f"{_name('redis', 'tls_cert_file')} and {_name('redis', 'tls_key_file')}: "
            "give both (the client certificate and its key) or neither"
        )
    return problems
