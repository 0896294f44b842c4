"""The torch releases commprof states it was tested with (commprof/capture/compat.py) agree with
pyproject.toml's declared range, the README and the CI matrix; untested releases get one line."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from commprof.capture import compat

ROOT = Path(__file__).resolve().parents[2]


def _declared_range() -> tuple[tuple[int, int], tuple[int, int]]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (torch,) = [d for d in deps if re.match(r"torch\b", d)]
    low = re.search(r">=(\d+)\.(\d+)", torch)
    high = re.search(r"<(\d+)\.(\d+)", torch)
    assert low and high, f"pyproject's torch requirement has no lower and upper bound: {torch}"
    return (int(low[1]), int(low[2])), (int(high[1]), int(high[2]))


def test_declared_range_is_the_one_compat_states():
    assert _declared_range() == compat.RANGE


def test_upper_bound_is_just_past_the_newest_tested_release():
    newest = max(tuple(int(x) for x in v.split(".")[:2]) for v in compat.TESTED)
    assert compat.RANGE[1] == (newest[0], newest[1] + 1)


def _untested_in_readme(readme: str, minor: int) -> bool:
    for line in readme.splitlines():
        if "untested" not in line:
            continue
        for a, b in re.findall(r"\b2\.(\d+)\s*[–-]\s*2\.(\d+)\b", line):
            if int(a) <= minor <= int(b):
                return True
        if re.search(rf"\b2\.{minor}\b", line):
            return True
    return False


def test_every_release_in_the_range_is_tested_or_listed_untested_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    low, high = compat.RANGE
    for minor in range(low[1], high[1]):
        tested = [v for v in compat.TESTED if v.startswith(f"2.{minor}.")]
        if tested:
            assert all(v in readme for v in tested), f"the README does not name {tested}"
        else:
            assert _untested_in_readme(readme, minor), \
                f"torch 2.{minor}: neither tested nor listed as untested in the README"


def test_ci_runs_the_matrix_release():
    ci = (ROOT / ".ci" / "run").read_text()
    second = [v for v, how in compat.TESTED.items() if "in CI (a second" in how]
    assert second, "compat.TESTED names no release that CI runs in a second environment"
    for version in second:
        assert f"torch_matrix.sh {version}" in ci


@pytest.mark.parametrize("version", sorted(compat.TESTED))
def test_tested_releases_say_nothing(version):
    assert compat.support_line(version) is None
    assert compat.support_line(version + "+cpu") is None


@pytest.mark.parametrize("version, words", [
    ("2.7.1", "untested"), ("2.14.0", "untested"), ("2.5.1", "outside"), ("2.16.0", "outside"),
    ("2.16.0a0+git1234", "outside"), ("3.0.0", "outside"), ("nightly", "not a release")])
def test_other_releases_get_one_line(version, words):
    line = compat.support_line(version)
    assert line is not None and words in line and "\n" not in line
    assert version.split("+")[0] in line


def test_no_torch_says_nothing():
    assert compat.support_line(None) is None
