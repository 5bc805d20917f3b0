"""Assignment 4b's references and hidden checks, tested directly (no nbgrader)."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import sample_answers
from initlab.checks import CheckFailed
from initlab_grading.assignments.initialization_deep_dive import grader as grading
from initlab_grading.course.samples import samples_for


def test_reference_passes_the_deterministic_checks():
    grading.check_var_product(grading.var_product)
    grading.check_output_second_moment(grading.output_second_moment)
    grading.check_skorski_std(grading.skorski_std)


def test_answers_written_another_way_pass_the_deterministic_checks():
    (sample,) = [
        s for s in samples_for("initialization_deep_dive") if s.student == "written-another-way"
    ]
    ns = {"math": math}
    for grade_id in ("var_product", "second_moment", "skorski"):
        exec(sample.answers[grade_id], ns)
    grading.check_var_product(ns["var_product"])
    grading.check_output_second_moment(ns["output_second_moment"])
    grading.check_skorski_std(ns["skorski_std"])


def test_library_scale_earns_no_points():
    ns = {"torch": torch, "math": math}
    exec(
        "def skorski_std(n_in, n_out):\n"
        "    from initlab import engine\n"
        "    return engine.init_std('skorski', n_in, n_out)\n",
        ns,
    )
    with pytest.raises(CheckFailed, match="earns no points"):
        grading.check_skorski_std(ns["skorski_std"])


def _product_norms(
    n: int, depth: int, seed: int, factor=lambda scale, n: scale / math.sqrt(n), update: bool = True
) -> dict[float, list[float]]:
    """Part 3's random-matrix products, as the reference answer draws them (float32)."""
    gen = torch.Generator().manual_seed(seed)
    norms = {}
    for scale in grading.PRODUCT_SCALES:
        start = torch.ones(n) / math.sqrt(n)
        v, history = start, []
        for _ in range(depth):
            v = (torch.randn(n, n, generator=gen) * factor(scale, n)) @ (v if update else start)
            history.append(float(v.norm()))
        norms[scale] = history
    return norms


def test_product_log_growth_matches_a_float64_simulation():
    """The digamma/trigamma mean and std of log |v_L| against 4,000 float64 products."""
    gen = torch.Generator().manual_seed(3)
    n, depth, scale, reps = 16, 10, 0.8, 4000
    v = torch.ones(reps, n, dtype=torch.float64) / math.sqrt(n)
    for _ in range(depth):
        M = torch.randn(reps, n, n, generator=gen, dtype=torch.float64) * scale / math.sqrt(n)
        v = (M @ v.unsqueeze(-1)).squeeze(-1)
    logs = v.norm(dim=1).log().numpy()
    mean, std = grading.product_log_growth(n, depth, scale)
    # two-sided 1e-7; the sample std of near-normal data has relative error 1/sqrt(2 reps)
    z = 5.3
    assert abs(logs.mean() - mean) < z * std / math.sqrt(reps)
    assert abs(logs.std(ddof=1) / std - 1) < z / math.sqrt(2 * reps)


@pytest.mark.parametrize("n", [64, 256])
def test_correct_products_pass(n):
    for seed in range(3):
        grading.check_products(_product_norms(n, 60, seed), n, 60)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"factor": lambda scale, n: scale**2 / math.sqrt(n)}, "multiply by scale once"),
        ({"update": False}, "multiply the previous layer's v"),
        ({"factor": lambda scale, n: scale}, "far too large. .*division by sqrt.n. is missing"),
        (
            {"factor": lambda scale, n: scale / n},
            "far too small. .*divide by math.sqrt.n., not by n",
        ),
    ],
)
def test_product_mistakes_are_named(kwargs, message):
    with pytest.raises(CheckFailed, match=message):
        grading.check_products(_product_norms(64, 60, 0, **kwargs), 64, 60)


@pytest.mark.parametrize(
    "factor, words",
    [
        (lambda scale, n: 3 * scale, "far too large"),  # std 3 scale / sqrt(n): not scale
        (lambda scale, n: scale / 20, "far too small"),  # std scale / (20 sqrt(n)): not scale / n
    ],
)
def test_overflow_and_underflow_name_the_cause_only_when_the_growth_matches(factor, words):
    with pytest.raises(CheckFailed, match=words) as info:
        grading.check_products(_product_norms(64, 60, 0, factor=factor), 64, 60)
    assert "missing" not in str(info.value) and "not by n" not in str(info.value)


def test_products_with_string_keys_are_refused_with_the_expected_keys():
    norms = {f"std = {s} / sqrt(n)": h for s, h in _product_norms(64, 60, 0).items()}
    with pytest.raises(CheckFailed, match="must map each scale"):
        grading.check_products(norms, 64, 60)


@pytest.mark.parametrize(
    "student, check, name, words",
    [
        ("var-product-zero-means", "check_var_product", "var_product", "both means are zero"),
        ("var-product-missing-term", "check_var_product", "var_product", "is missing"),
        ("var-product-second-moment", "check_var_product", "var_product", "E[(XY)^2]"),
        (
            "second-moment-ignores-mean",
            "check_output_second_moment",
            "output_second_moment",
            "nonzero mean adds",
        ),
        ("skorski-variance", "check_skorski_std", "skorski_std", "That is the variance"),
        ("skorski-one-root", "check_skorski_std", "skorski_std", "taken separately"),
        ("skorski-xavier", "check_skorski_std", "skorski_std", "Xavier's standard deviation"),
    ],
)
def test_each_formula_mistake_gets_its_own_diagnosis(student, check, name, words):
    ns = sample_answers("initialization_deep_dive", student)
    with pytest.raises(grading.CheckFailed) as failure:
        getattr(grading, check)(ns[name])
    said = str(failure.value)
    assert words in said, said
    named = ["both means are zero", "is missing", "E[(XY)^2]", "That is the variance"]
    named += ["taken separately", "Xavier's standard deviation", "nonzero mean adds"]
    assert sum(n in said for n in named) == 1, said


def test_formula_diagnoses_stay_silent_for_other_wrong_answers():
    """A wrong answer that is none of the named mistakes (1 % off) gets no diagnosis."""
    for check, wrong in (
        ("check_var_product", lambda mx, vx, my, vy: 1.01 * grading.var_product(mx, vx, my, vy)),
        ("check_skorski_std", lambda n_in, n_out: 1.01 * grading.skorski_std(n_in, n_out)),
        (
            "check_output_second_moment",
            lambda mx, vx, n, vw: 1.01 * grading.output_second_moment(mx, vx, n, vw),
        ),
    ):
        with pytest.raises(grading.CheckFailed) as failure:
            getattr(grading, check)(wrong)
        assert "That is" not in str(failure.value) and "missing" not in str(failure.value)
