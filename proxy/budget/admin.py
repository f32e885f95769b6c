"""Key and budget administration, shared by the admin HTTP API and the `keys`/`budgets` CLI.

Both front-ends validate their input into the pydantic models here and call the same
functions, so `pareto-proxy keys create --team t --budget-usd 5` and
`POST /admin/keys {"team": "t", "budget_usd": 5}` cannot drift apart. Errors are
`InvalidRequest`s that name the field: the API turns them into 400 envelopes, the CLI prints
them.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from proxy.budget.keys import key_id_of, new_key
from proxy.budget.ledger import BudgetState, KeyRecord, Ledger, Period, key_scope, team_scope
from proxy.config import Task
from proxy.errors import InvalidRequest, NotFound


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KeyCreate(_Strict):
    """`POST /admin/keys` and `keys create`."""

    team: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.\-]+$")
    budget_usd: float | None = Field(default=None, ge=0)
    period: Period = "month"
    soft_usd: float | None = Field(default=None, ge=0)
    default_policy: str | None = None
    default_task: Task | None = None
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)


class BudgetRef(_Strict):
    """`DELETE /admin/budgets` and `budgets remove`: which budget (one of `team` or `key_id`, a period)."""

    team: str | None = Field(default=None, min_length=1)
    key_id: str | None = Field(default=None, min_length=1)
    period: Period

    @model_validator(mode="after")
    def _one_scope(self) -> "BudgetRef":
        if (self.team is None) == (self.key_id is None):
            raise ValueError("give exactly one of 'team' or 'key_id'")
        return self

    @property
    def scope(self) -> str:
        return team_scope(self.team) if self.team is not None else key_scope(self.key_id or "")


class BudgetSet(BudgetRef):
    """`PUT /admin/budgets` and `budgets set`: one of `team` or `key_id`, a limit and/or a soft limit."""

    usd: float | None = Field(default=None, ge=0, description="hard limit")
    soft_usd: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _limits(self) -> "BudgetSet":
        if self.usd is None and self.soft_usd is None:
            raise ValueError("give 'usd' (the hard limit), 'soft_usd', or both")
        if self.usd is not None and self.soft_usd is not None and self.soft_usd > self.usd:
            raise ValueError("'soft_usd' must not exceed 'usd'")
        return self


def parse(model: type[BaseModel], data: Any) -> Any:
    """Validate `data` into `model`, or an `InvalidRequest` naming the first bad field."""
    if not isinstance(data, dict):
        raise InvalidRequest("The body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown field (known: {', '.join(model.model_fields)})"
        raise InvalidRequest(f"Invalid value for '{field}': {msg}." if field else f"Invalid body: {msg}.",
                             param=field, code="invalid_value") from None


async def create_key(ledger: Ledger, spec: KeyCreate) -> tuple[KeyRecord, str]:
    """Make a key (stored hashed) and its budget if asked; returns the record and the plain key,
    which is shown once and never again."""
    key, key_hash = new_key()
    record = KeyRecord(key_id=key_id_of(key_hash), key_hash=key_hash, team=spec.team,
                       default_policy=spec.default_policy, default_task=spec.default_task,
                       rpm=spec.rpm, tpm=spec.tpm, created=time.time())
    await ledger.add_key(record)
    if spec.budget_usd is not None or spec.soft_usd is not None:
        await ledger.set_budget(key_scope(record.key_id), spec.period, spec.budget_usd, spec.soft_usd)
    return record, key


async def revoke_key(ledger: Ledger, key_id: str) -> None:
    if not await ledger.revoke_key(key_id):
        raise NotFound(f"No key with id {key_id!r} (list them with GET /admin/keys or `pareto-proxy keys list`).",
                       param="id")


async def set_budget(ledger: Ledger, spec: BudgetSet, static_key_ids: Collection[str] = ()) -> list[BudgetState]:
    """Set a budget; a `key_id` must name a known key (a typo would otherwise limit nothing)."""
    if (spec.key_id is not None and spec.key_id not in static_key_ids
            and not any(r.key_id == spec.key_id for r in await ledger.keys())):
        raise NotFound(f"No key with id {spec.key_id!r} (list them with GET /admin/keys or `pareto-proxy keys list`).",
                       param="key_id")
    await ledger.set_budget(spec.scope, spec.period, spec.usd, spec.soft_usd)
    return await ledger.budgets([spec.scope])


async def remove_budget(ledger: Ledger, ref: BudgetRef) -> None:
    """Lift a budget; its scope's spend stays recorded (a budget set again later sees it)."""
    if not any(b.period == ref.period for b in await ledger.budgets([ref.scope])):
        raise NotFound(f"No {ref.period} budget on {ref.scope} (see GET /admin/budgets or `pareto-proxy budgets show`).",
                       param="period")
    await ledger.set_budget(ref.scope, ref.period, None, None)
