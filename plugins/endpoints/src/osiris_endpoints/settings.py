"""``plugins.endpoints`` in the config file."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

DAY = 86400.0


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Serve endpoint agents (both ports open only when true).")
    listen: str = Field("0.0.0.0", description="Address both ports listen on.")
    port: int = Field(50051, ge=0, le=65535, description="Mutual-TLS port of the streams (0: any free port).")
    enrol_port: int = Field(50052, ge=0, le=65535,
                            description="TLS port for enrolment only (no client certificate yet; 0: any free port).")
    advertise: str | None = Field(None, description="Host name or address endpoints reach the appliance by "
                                                    "(written into tokens); default: this machine's name.")
    server_names: list[str] = Field(default_factory=list,
                                    description="More DNS names or IP addresses for the server certificate.")
    token_ttl: float = Field(3600.0, ge=60, le=30 * DAY, description="Default lifetime of an enrolment token (s).")
    cert_lifetime: float = Field(7 * DAY, ge=600, le=90 * DAY, description="Lifetime of a client certificate (s).")
    renew_before: float = Field(2 * DAY, ge=60, description="Renew a client certificate this long before expiry (s).")
    heartbeat: float = Field(60.0, ge=1, le=3600, description="Heartbeat interval asked of endpoints (s).")
    silence_allowance: float = Field(300.0, ge=2, description="An endpoint silent this long is 'not reporting' (s).")
    revocation_poll: float = Field(15.0, gt=0, le=60, description="How often open streams are checked for "
                                                                   "revocation (s); revocation takes effect within it.")
    handshake_rate: float = Field(50.0, gt=0, description="New calls per second (enrol, renew, stream).")
    handshake_burst: int = Field(200, ge=1, description="New calls allowed at once above the rate.")
    event_rate: float = Field(1000.0, gt=0, description="Events per second per endpoint; beyond it, reading slows.")
    event_burst: int = Field(5000, ge=1, description="Events an endpoint may send at once above its rate.")
    pipeline: int = Field(8, ge=1, le=256, description="Batches stored at once; other streams wait (back-pressure).")
    max_streams: int = Field(5000, ge=1, description="Open streams at most.")
    max_clock_skew: float = Field(300.0, ge=1, description="An event dated further in the future is refused (s).")
    max_event_age: float = Field(15 * DAY, ge=60, description="An event older than this is refused (s).")
    target_kind: str = Field("windows", description="Kind of the checks endpoints run (the catalogue).")
    roles: list[str] = Field(default_factory=lambda: ["workstation", "server", "dc"],
                             description="Roles an endpoint may declare at enrolment.")

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.renew_before >= self.cert_lifetime:
            raise ValueError("renew_before must be shorter than cert_lifetime")
        if self.silence_allowance <= self.heartbeat:
            raise ValueError("silence_allowance must be longer than heartbeat")
        return self
