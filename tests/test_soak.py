"""The short form of ``make soak``: memory and keys flat, nothing missing."""

from __future__ import annotations

import pytest

from bench.soak import Soak

pytestmark = pytest.mark.e2e


def test_a_short_soak_stays_flat_and_loses_nothing(tmp_path, capsys):
    assert Soak(30, tmp_path).run() == 0, capsys.readouterr().out
