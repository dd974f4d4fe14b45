"""The ``evidence`` section of the config file."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

# 45 CFR 164.316(b)(2)(i): retain documentation for six years. Six calendar
# years are at most 2192 days (two leap days).
SIX_YEARS_DAYS = 2192

DEFAULT_MRN_PATTERNS = [
    # "MRN: 00123456", "medical record no. A-77881", "MRN#7788991", "MR# 123456", "MR No. 445566",
    # glued with "_" or after "/" as in file names and URL paths: "scan_MRN_00123456.pdf", "/mrn/00123456/"
    r"(?<![A-Za-z0-9])(?i:MRN|MR\s?#|MR\s?(?:no\.?|num(?:ber)?)(?=[\s:#=_/])|med(?:ical)?[ _-]?rec(?:ord)?"
    r"(?:[ _-]?(?:number|num|no\.?|#))?)(?![A-Za-z])(?:\s|[:#=/_]){0,4}([A-Z]{0,3}-?\d[\d-]{3,14}\d)(?![0-9])",
]

DEFAULT_NAME_FIELDS = [
    "patient", "patient_name", "patient_full_name", "patient_first_name", "patient_last_name",
    "patient_given_name", "patient_family_name", "guardian", "guardian_name", "emergency_contact",
    "next_of_kin", "subscriber_name", "insured_name",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScrubSettings(_Model):
    mrn_patterns: list[str] = Field(
        default_factory=lambda: list(DEFAULT_MRN_PATTERNS),
        description="Regular expressions for medical record numbers; group 1, if present, is what is replaced",
    )
    name_fields: list[str] = Field(
        default_factory=lambda: list(DEFAULT_NAME_FIELDS),
        description="Keys whose string values are patient names (compared case- and punctuation-insensitively)",
    )

    @field_validator("mrn_patterns")
    @classmethod
    def _compiles(cls, v: list[str]) -> list[str]:
        import re

        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from None
        return v


class EvidenceSettings(_Model):
    enabled: bool = Field(default=True, description="Record evidence bundles (turning this off is for labs only)")
    directory: Path | None = Field(default=None, description="Where the log lives; default <state_dir>/evidence")
    allow_short_retention_for_lab: bool = Field(
        default=False,
        description="Allow retention_days below six years (labs only: evidence would not meet 45 CFR 164.316(b)(2))",
    )
    retention_days: int = Field(
        default=SIX_YEARS_DAYS, ge=1,
        description="Nothing younger than this can be pruned (at least six years, 2192 days, 45 CFR 164.316(b)(2), "
                    "unless allow_short_retention_for_lab); the log keeps the longest it was ever given",
    )
    checkpoint_interval: float = Field(default=300.0, gt=0, description="Seconds between scheduled checkpoints")
    batch_max: int = Field(default=512, ge=1, le=100_000, description="Most bundles in one group commit")
    delivery_timeout: float = Field(default=30.0, gt=0, description="Seconds one sink delivery may take")
    backoff_initial: float = Field(default=2.0, gt=0, description="First retry delay of a failing sink, seconds")
    backoff_max: float = Field(default=900.0, gt=0, description="Longest retry delay of a failing sink, seconds")
    scrub: ScrubSettings = ScrubSettings()

    @field_validator("retention_days")
    @classmethod
    def _six_years(cls, v: int, info: ValidationInfo) -> int:
        if v < SIX_YEARS_DAYS and not info.data.get("allow_short_retention_for_lab", False):
            raise ValueError(
                f"at least {SIX_YEARS_DAYS} days, the six years HIPAA requires (45 CFR 164.316(b)(2)), got {v}; "
                "a lab may set evidence.allow_short_retention_for_lab: true")
        return v
