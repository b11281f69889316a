"""Settings of the control API (`mds-sink admin serve`): `control_api.*`, `MDS_SINK_CONTROL_API__*`.

The control API runs with the owner's credentials (it migrates and applies policies), so it is bound
to the loopback interface unless told otherwise, and refuses to listen anywhere else without a token.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

# As the side port's http.admin_token: long enough not to be guessed, and never the documented example.
MIN_TOKEN_CHARS = 32
PLACEHOLDER_TOKEN_PREFIX = "change-me"


class ControlApiSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(
        default="127.0.0.1",
        description="Address to listen on; any other than loopback needs control_api.admin_token.",
    )
    port: int = Field(default=8089, ge=0, le=65_535, description="0 picks a free port.")
    admin_token: SecretStr | None = Field(
        default=None,
        description="Bearer token every mutating route and the job routes require; unset: read-only probes only.",
    )
    max_wait_s: float = Field(
        default=60.0,
        gt=0,
        le=300,
        description="Longest `?wait=` a request may ask for before it is answered 202 with a status resource.",
    )
    backfill_workers: int = Field(default=2, ge=1, le=16, description="Backfill jobs run at once by the server.")

    @field_validator("admin_token")
    @classmethod
    def _token(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None:
            return v
        if len(v.get_secret_value()) < MIN_TOKEN_CHARS:
            raise ValueError(f"must be at least {MIN_TOKEN_CHARS} characters (unset it to disable the mutating routes)")
        if v.get_secret_value().startswith(PLACEHOLDER_TOKEN_PREFIX):
            raise ValueError("is the documented placeholder; set a secret of your own, e.g. `openssl rand -hex 32`")
        return v
