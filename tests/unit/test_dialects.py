"""The dialects as data, and the simulator serving exactly what each one describes."""

from __future__ import annotations

import json

import pytest

from syncd.provider.dialects import CORE_ACTIONS, DIALECTS, OPTIONAL_ACTIONS, Dialect
from syncd.simulator import SimulatedProvider
from syncd.simulator.world import World
from tests.conftest import TOKEN


def test_every_dialect_has_the_core_actions_then_what_it_offers() -> None:
    for dialect in DIALECTS.values():
        names = list(dialect.actions.values())
        assert names[: len(CORE_ACTIONS)] == list(CORE_ACTIONS)
        assert names[len(CORE_ACTIONS) :] == [a for a in OPTIONAL_ACTIONS if a in dialect.offers]


def test_the_catalog_action_goes_by_the_dialects_own_name_on_the_wire() -> None:
    assert DIALECTS["key"].actions["services"] == "packages"
    assert "packages" not in DIALECTS["key"].actions
    assert DIALECTS["api_token"].actions["packages"] == "packages"


def test_a_dialect_cannot_offer_an_action_nobody_knows() -> None:
    with pytest.raises(ValueError, match="no such optional action"):
        Dialect("x", "key", "services", "service", "comments", offers=frozenset({"refund"}))


@pytest.mark.parametrize("name", sorted(DIALECTS))
def test_the_simulator_serves_each_action_its_dialect_has_and_no_other(name: str) -> None:
    dialect = DIALECTS[name]
    sim = SimulatedProvider(dialect=name, token=TOKEN)
    assert sim.actions == tuple(dialect.actions.values())
    every_wire_name = {wire for d in DIALECTS.values() for wire in d.actions}
    for wire in sorted(every_wire_name):
        reply = json.loads(sim.handle({dialect.key_field: TOKEN, "action": wire}).body)
        served = wire in dialect.actions
        assert (reply == {"error": "Incorrect request"}) is not served, wire
        counted = dialect.actions[wire] if served else f"unknown:{wire}"
        assert sim.count(counted) == 1


def test_the_simulators_world_answers_every_action_a_dialect_may_offer() -> None:
    # A name added to OPTIONAL_ACTIONS without a handler in the world fails here, and a
    # simulator for a dialect offering it refuses to start.
    every = Dialect("all", "key", "services", "service", "comments", frozenset(OPTIONAL_ACTIONS))
    world = World(dialect=every)
    for action in every.actions.values():
        assert world.answer(action, {}) != {"error": "Incorrect request"}, action
    assert world.answer("refund", {}) == {"error": "Incorrect request"}
