"""Cumulative limits on a metered argument (RELIABILITY S6): the pure parts."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from executor_service.domain.metering import MeteredTotals, metered_event, over_meter
from planner_service.domain.policy import DEFAULT_POLICY_DIR, PolicyEngine, RunningTotals
from shared_schemas import Principal, Role, SideEffect, Step, ToolMeter, ToolSpec

METER = ToolMeter(arg="amount", unit="USD", run_limit=10_000, tenant_daily_limit=25_000)
TRANSFER = ToolSpec(name="bank.transfer", side_effect=SideEffect.WRITE, meter=METER)
TOOLS = {"bank.transfer": TRANSFER, "noop": ToolSpec(name="noop")}
ACME = Principal(tenant="acme", subject="u", roles=[Role.SUBMITTER])


def pay(i: int, amount: Any) -> Step:
    return Step(id=f"t{i}", tool="bank.transfer", args={"amount": amount})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1500, Decimal(1500)),
        (0.1, Decimal("0.1")),
        (-2500, Decimal(2500)),  # a negative amount offsets nothing
        (True, None),
        ("1500", None),
        ({"$ref": "quote.output"}, None),
        (float("nan"), None),
        (float("inf"), None),
        (None, None),
    ],
)
def test_the_amount_of_a_call(value: Any, expected: Decimal | None) -> None:
    assert METER.amount({"amount": value}) == expected
    assert METER.amount({}) is None


def test_a_tool_without_a_meter_keeps_its_catalog_form() -> None:
    assert "meter" not in ToolSpec(name="noop").model_dump(mode="json")
    assert TRANSFER.model_dump(mode="json")["meter"]["arg"] == "amount"


def test_running_totals_are_exact_rounded_up_and_go_unknown_at_a_ref() -> None:
    totals = RunningTotals(TOOLS)
    assert totals.add(pay(0, 0.1)) == (1, True)
    assert totals.add(pay(1, 0.2)) == (1, True)  # 0.3 exactly, not 0.30000000000000004
    assert totals.add(Step(id="x", tool="noop")) == (0, True)
    assert totals.add(pay(2, 10_000.7)) == (10_001, True)
    assert totals.add(pay(3, {"$ref": "x.output"})) == (10_001, False)
    assert totals.add(pay(4, 1)) == (10_002, False)  # unknown stays unknown


def test_over_meter_names_the_first_cap_exceeded() -> None:
    fits = MeteredTotals(Decimal(8500), Decimal(20_000))
    assert over_meter(METER, "bank.transfer", Decimal(1500), fits) is None
    run = over_meter(METER, "bank.transfer", Decimal("1500.01"), fits)
    assert run is not None
    assert (run["scope"], run["total"], run["amount"], run["limit"]) == (
        "run",
        "8500",
        "1500.01",
        "10000",
    )
    tenant = over_meter(
        METER, "bank.transfer", Decimal(6000), MeteredTotals(Decimal(0), fits.tenant_total)
    )
    assert tenant is not None
    assert tenant["scope"] == "tenant"
    value = over_meter(METER, "bank.transfer", None, fits)
    assert value is not None
    assert value["scope"] == "value"
    assert over_meter(ToolMeter(arg="amount"), "t", Decimal(10**12), fits) is None  # no caps
    assert metered_event(METER, "bank.transfer", Decimal(1500))["amount"] == "1500"


def test_policy_sees_the_running_total_and_memoised_answers_do_not_leak(tmp_path: Path) -> None:
    (tmp_path / "t.cedar").write_text(
        '@id("t.over-5000")\n'
        'forbid (principal, action == Planexec::Action::"invoke_unattended", resource)\n'
        "when { context.cumulative_amount > 5000 };\n",
        encoding="utf-8",
    )
    engine = PolicyEngine((DEFAULT_POLICY_DIR, tmp_path))
    steps = [pay(i, 1500) for i in range(8)]
    for _ in range(2):  # the second time from the memo
        judged = engine.evaluate(steps, TOOLS, ACME, safe_mode=False)
        assert [d.decision.value for d in judged] == ["allow"] * 3 + ["require_approval"] * 3 + [
            "deny"
        ] * 2
        assert judged[6].rule_ids == ["planexec.metered-over-run-limit"]
    # one step alone, same tool and args: allowed, not the memoised answer of step 4
    [alone] = engine.evaluate([pay(4, 1500)], TOOLS, ACME, safe_mode=False)
    assert alone.decision.value == "allow"
    # earlier versions' steps start the total
    [after] = engine.evaluate([pay(9, 1500)], TOOLS, ACME, safe_mode=False, prior_steps=steps[:6])
    assert after.decision.value == "deny"


def test_the_shipped_tenant_daily_limit_rule_denies_a_plan_over_it() -> None:
    engine = PolicyEngine()
    meter = ToolMeter(arg="amount", tenant_daily_limit=3000)
    tools = {"bank.transfer": TRANSFER.model_copy(update={"meter": meter})}
    judged = engine.evaluate([pay(i, 1500) for i in range(3)], tools, ACME, safe_mode=False)
    assert [d.decision.value for d in judged] == ["allow", "allow", "deny"]
    assert judged[2].rule_ids == ["planexec.metered-over-tenant-daily-limit"]
