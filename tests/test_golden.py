"""The seeded tiny model's outputs on fixed candidates equal those stored in the repo
(tests/support/golden_scores.json): a change to the arithmetic of a score shows up here."""

from __future__ import annotations

import json

import pytest

from support.golden import BUILD_FILES, EXACT_COLUMNS, GOLDEN, compute, fingerprint
from support.reference import assert_exact

STORED = json.loads(GOLDEN.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def outputs(tiny_model_dir) -> dict[str, list[dict]]:
    return compute(tiny_model_dir, STORED["candidates"])


def test_the_tiny_model_builds_as_when_the_scores_were_stored(tiny_model_dir):
    """Seeded: the same files on every machine (else the scores below compare different
    models: torch, transformers or tokenizers changed how it is built)."""
    assert fingerprint(tiny_model_dir) == STORED["build"], (
        f"the tiny model's {'/'.join(BUILD_FILES)} differ from the stored build "
        f"(stored with {STORED['versions']})"
    )


@pytest.mark.parametrize("config", sorted(STORED["outputs"]))
def test_scores_equal_the_stored_ones(outputs, config):
    dtype = config.split("/")[0]
    stored, got = STORED["outputs"][config], outputs[config]
    assert len(got) == len(stored)
    for i, (g, s) in enumerate(zip(got, stored, strict=True)):
        for col in EXACT_COLUMNS:
            assert g[col] == s[col], (config, i, col, g[col], s[col])
    for col in ("score", "reward"):
        assert_exact([r[col] for r in got], [r[col] for r in stored], dtype, f"{config} {col}")


def test_the_stored_cases_cover_what_they_should():
    """Scored, unscored, shortened and reasoning-wrapped candidates, in both precisions."""
    outs = STORED["outputs"]
    assert {c.split("/")[0] for c in outs} == {"float32", "float64"}
    rows = [r for rows in outs.values() for r in rows]
    assert any(r["truncated"] and r["score"] is not None for r in rows)
    assert any(r["truncated"] and r["score"] is None for r in rows)
    assert any(not r["code_valid"] for r in rows) and any(r["code_valid"] for r in rows)
    assert len({round(r["score"], 3) for r in rows if r["score"] is not None}) > 10
