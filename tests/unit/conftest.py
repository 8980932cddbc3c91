"""Unit tests run nothing real but Python: no socket, no process. This folder's fixture
makes that a rule rather than a habit: a unit test that opens a connection, listens, or
starts a program fails, naming what it did. (Databases and HTTP servers belong to
``tests/system``.)"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest


def _refuse(what: str) -> Any:
    def refused(*_args: object, **_kwargs: object) -> NoReturn:
        raise AssertionError(f"a unit test may not {what}: it belongs in tests/system")

    return refused


@pytest.fixture(autouse=True)
def nothing_real(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(socket.socket, "connect", _refuse("connect a socket"))
    monkeypatch.setattr(socket.socket, "connect_ex", _refuse("connect a socket"))
    monkeypatch.setattr(socket.socket, "bind", _refuse("bind a socket"))
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse("start a process"))
    yield
