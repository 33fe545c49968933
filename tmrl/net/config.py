"""``RelayConfig``: every knob of the relay server and its clients, typed and documented."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

MIB = 1024 * 1024
DEFAULT_SECRET = "tmrl-local-secret"


class RelayConfig(BaseModel):
    """Configuration shared by ``RelayServer``, ``WorkerClient``, ``TrainerClient`` and ``ObserverClient``.

    The same object is given to the server and to its clients: the clients read ``host``/``port``/``secret``/TLS
    and their own sections, the server the rest.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # -- where ---------------------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address the server binds / clients connect to.")
    port: int = Field(55555, ge=0, le=65535, description="TCP port (0 = any free port, server side only).")
    # -- security ------------------------------------------------------------------------------------------
    secret: SecretStr = Field(
        SecretStr(DEFAULT_SECRET),
        description="Shared secret for the HMAC challenge-response; never sent on the wire. Change it when "
        "the relay listens on anything but loopback.",
    )
    tls: bool = Field(
        False, description="Wrap connections in TLS (server needs cert + key, clients the cert)."
    )
    tls_cert: Path | None = Field(None, description="PEM certificate (self-signed, pinned by the clients).")
    tls_key: Path | None = Field(None, description="PEM private key (server only).")
    # -- limits --------------------------------------------------------------------------------------------
    max_frame_bytes: int = Field(64 * MIB, ge=64 * 1024, description="Largest frame accepted on the wire.")
    queue_bytes: int = Field(
        512 * MIB,
        ge=1 * MIB,
        description="Byte budget of batches held for the trainer (queued + in flight). When full, the oldest "
        "queued batch is dropped and counted.",
    )
    trainer_window_bytes: int = Field(
        64 * MIB, ge=64 * 1024, description="Bytes sent to the trainer and not yet acknowledged by it."
    )
    send_buffer_bytes: int = Field(
        32 * MIB,
        ge=64 * 1024,
        description="Per-connection cap on bytes buffered for sending; a client above it is disconnected as a "
        "slow consumer (weights never pile up: only the newest is pending per worker).",
    )
    # -- timing --------------------------------------------------------------------------------------------
    handshake_timeout: float = Field(5.0, gt=0, description="Seconds allowed for the whole handshake.")
    idle_timeout: float = Field(
        30.0, gt=0, description="A peer silent this long is disconnected (clients ping every third of it)."
    )
    connect_timeout: float = Field(5.0, gt=0, description="Client: seconds per TCP/TLS connection attempt.")
    backoff_initial: float = Field(0.05, gt=0, description="Client: first reconnection delay (seconds).")
    backoff_max: float = Field(5.0, gt=0, description="Client: longest reconnection delay (seconds).")
    status_interval: float = Field(10.0, gt=0, description="Server: seconds between status log lines.")
    shutdown_timeout: float = Field(5.0, ge=0, description="Server: seconds to flush peers on shutdown.")
    # -- worker side ---------------------------------------------------------------------------------------
    flush_steps: int = Field(100, ge=1, description="Worker: send a batch every this many steps ...")
    flush_seconds: float = Field(1.0, gt=0, description="... or this many seconds, and at every episode end.")
    max_unacked_batches: int = Field(
        4096,
        ge=1,
        description="Worker: batches kept until acknowledged; beyond, the oldest is dropped, counted.",
    )
    max_unacked_bytes: int = Field(256 * MIB, ge=1 * MIB, description="Worker: byte bound of the same.")
    # -- server persistence --------------------------------------------------------------------------------
    spool_path: Path | None = Field(
        None,
        description="Server: file where batches still held at shutdown are saved and reloaded at the next "
        "start, so a relay restart loses nothing. None: `tmrl-server` and `tmrl run` use <run dir>/relay.spool; a bare "
        "RelayServer counts batches held at shutdown as dropped.",
    )

    @model_validator(mode="after")
    def _check(self) -> RelayConfig:
        if self.queue_bytes < self.max_frame_bytes:
            raise ValueError("queue_bytes must be at least max_frame_bytes")
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must be >= backoff_initial")
        if self.tls and self.tls_cert is None:
            raise ValueError("tls=True needs tls_cert (create one with tmrl.net.tls.create_self_signed)")
        return self

    def with_(self, **changes: object) -> RelayConfig:
        """A validated copy with ``changes`` applied (e.g. ``config.with_(port=server.port)``)."""
        return RelayConfig.model_validate({**self.model_dump(), **changes})

    def secret_bytes(self) -> bytes:
        """The shared secret as bytes (for HMAC only)."""
        secret = self.secret  # a plain str if the config was copied with model_copy(update=...)
        return (secret.get_secret_value() if isinstance(secret, SecretStr) else str(secret)).encode()
