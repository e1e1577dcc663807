"""Kafka connection settings: bootstrap servers, security (SSL, SASL) and time bounds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI")
SECRET_WORDS = ("password", "secret", "token")
"""A setting whose name holds one of these is shown as MASK in reprs."""
MASK = "***"


class KafkaConfigError(ValueError):
    """A Kafka setting that cannot work, named with the allowed values."""


@dataclass(frozen=True, repr=False)
class KafkaConfig:
    """How to reach the brokers; passed through to kafka-python as is.

    The three time bounds make one publish attempt finish (or fail) within about
    `delivery_timeout_ms`, even while the brokers are unreachable. The repr (and str) masks
    the passwords, and the extra settings named like secrets (see `SECRET_WORDS`).
    """

    bootstrap_servers: str = "127.0.0.1:9092"
    """Comma-separated host:port list."""
    client_id: str = "fsm-userstatus"
    security_protocol: str = "PLAINTEXT"
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: str | None = None
    ssl_check_hostname: bool = True
    sasl_mechanism: str | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = None
    request_timeout_ms: int = 5_000
    delivery_timeout_ms: int = 10_000
    max_block_ms: int = 5_000
    producer_extra: Mapping[str, Any] = field(default_factory=dict)
    """Any other KafkaProducer setting, passed through unchanged (it wins over the above)."""
    consumer_extra: Mapping[str, Any] = field(default_factory=dict)
    """Any other KafkaConsumer setting, passed through unchanged."""

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not self.servers:
            problems.append("bootstrap_servers is empty; give host:port[,host:port...]")
        if self.security_protocol not in SECURITY_PROTOCOLS:
            problems.append(
                f"security_protocol {self.security_protocol!r} is not one of "
                + ", ".join(SECURITY_PROTOCOLS)
            )
        if self.sasl_mechanism is not None and self.sasl_mechanism not in SASL_MECHANISMS:
            problems.append(
                f"sasl_mechanism {self.sasl_mechanism!r} is not one of "
                + ", ".join(SASL_MECHANISMS)
            )
        if self.security_protocol.startswith("SASL") and self.sasl_mechanism is None:
            problems.append(f"security_protocol {self.security_protocol} needs a sasl_mechanism")
        for name in ("request_timeout_ms", "delivery_timeout_ms", "max_block_ms"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)!r}")
        if problems:
            raise KafkaConfigError("; ".join(problems))

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        shown["producer_extra"] = _masked(self.producer_extra)
        shown["consumer_extra"] = _masked(self.consumer_extra)
        return f"KafkaConfig({', '.join(f'{k}={v!r}' for k, v in _masked(shown).items())})"

    def scrub(self, text: str) -> str:
        """`text` with the passwords and every extra setting's text value masked: kafka-python
        repeats settings it does not know, a misspelled secret's value among them."""
        values = [self.ssl_password, self.sasl_plain_password]
        values += [*self.producer_extra.values(), *self.consumer_extra.values()]
        for value in values:
            if isinstance(value, str) and len(value) >= 4:
                text = text.replace(value, MASK)
        return text

    @property
    def attempt_seconds(self) -> float:
        """The longest one publish attempt takes: blocked on metadata, then on delivery."""
        return (self.max_block_ms + self.delivery_timeout_ms) / 1000

    @property
    def servers(self) -> list[str]:
        """The bootstrap servers as a list."""
        return [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()]

    def connection_settings(self) -> dict[str, Any]:
        """Settings shared by producers, consumers and admin clients."""
        settings: dict[str, Any] = {
            "bootstrap_servers": self.servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
        }
        optional = {
            "ssl_cafile": self.ssl_cafile,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
            "ssl_password": self.ssl_password,
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.sasl_plain_username,
            "sasl_plain_password": self.sasl_plain_password,
        }
        settings.update({k: v for k, v in optional.items() if v is not None})
        if self.security_protocol in ("SSL", "SASL_SSL"):
            settings["ssl_check_hostname"] = self.ssl_check_hostname
        return settings

    def producer_settings(self) -> dict[str, Any]:
        """kafka-python KafkaProducer settings: acks=all, idempotent, bounded in time."""
        settings = self.connection_settings()
        settings.update(
            acks="all",
            enable_idempotence=True,
            delivery_timeout_ms=self.delivery_timeout_ms,
            max_block_ms=self.max_block_ms,
            # Without this a producer created while the brokers are down blocks for 30 s.
            bootstrap_timeout_ms=self.max_block_ms,
            linger_ms=0,
        )
        settings.update(self.producer_extra)
        return settings

    def consumer_settings(self) -> dict[str, Any]:
        """kafka-python KafkaConsumer settings (without group or offsets)."""
        settings = self.connection_settings()
        # request_timeout_ms of a consumer must exceed its session timeout (10 s by default).
        settings["request_timeout_ms"] = max(self.request_timeout_ms, 30_000)
        settings.update(self.consumer_extra)
        return settings


def _masked(settings: Mapping[str, Any]) -> dict[str, Any]:
    """`settings` with the values of those named like secrets (and set) replaced by MASK."""
    return {
        name: MASK if value is not None and _is_secret(name) else value
        for name, value in settings.items()
    }


def _is_secret(name: str) -> bool:
    return any(word in name.lower() for word in SECRET_WORDS)
