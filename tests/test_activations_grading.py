"""Assignment 3's references and hidden checks, tested directly (no nbgrader)."""

import numpy as np
import pytest
import torch

from initlab.checks import CheckFailed
from initlab_grading import activations as grading
from initlab_grading.samples import samples_for


def _answers(student):
    (sample,) = [s for s in samples_for("activations") if s.student == student]
    namespace = {"np": np, "torch": torch}
    for source in sample.answers.values():
        exec(source, namespace)
    return namespace


def _table(ns):
    names = ("relu", "sigmoid", "tanh", "swish", "mish")
    return {n: (ns[n], ns[f"{n}_grad"]) for n in names}


def test_the_seed_construction_has_error_exactly_0_04_and_passes():
    err, where = grading.sup_error(grading.SEED_W1, grading.SEED_B1, grading.SEED_W2, 0.0)
    assert err == pytest.approx(0.04, abs=1e-15) and where == pytest.approx(0.8)
    # also with its parameters rounded to float32 (0.2, 0.6, 0.12 ... are not float32 numbers)
    f32 = [a.astype(np.float32) for a in (grading.SEED_W1, grading.SEED_B1, grading.SEED_W2)]
    grading.check_relu_net(*f32, np.float32(0))


def test_sup_error_is_exact_between_grid_points():
    """A single hinge whose worst point (a tangent point) is not on the dense grid."""
    a = 1.0 / 3.0  # g(x) = a x - c: max of g - x^2 at x = a / 2 = 1/6
    err, where = grading.sup_error([a], [0.0], [1.0], -0.01)
    want = max(abs(a * x - 0.01 - x * x) for x in (0.0, a / 2, 1.0))
    assert err == pytest.approx(want, abs=1e-15)


def test_a_net_just_over_the_bound_fails():
    with pytest.raises(CheckFailed, match="largest error"):
        grading.check_relu_net(grading.SEED_W1, grading.SEED_B1, grading.SEED_W2, 1e-4)


def test_reference_and_another_way_pass_every_check():
    for student in ("another-way",):
        ns = _answers(student)
        grading.check_relu_net(ns["W1"], ns["b1"], ns["W2"], ns["b2"])
        grading.check_functions(_table(ns))
        grading.check_derivatives(_table(ns))
        grading.check_large_inputs(_table(ns))
        grading.check_split(ns["train_idx"], ns["val_idx"])
    grading.check_split(grading.TRAIN_IDX, grading.VAL_IDX)


def test_torch_float32_is_within_the_derived_tolerance_everywhere():
    """The reference formulas in float32 against autograd in float64 use a small part of
    the allowed difference (a margin test for the N_OPS = 32 bound)."""
    ns = _answers("another-way")
    xs = torch.tensor(np.concatenate([grading.MODERATE, grading.LARGE]), dtype=torch.float32)
    x64 = xs.double().numpy()
    for name, (f, df) in _table(ns).items():
        for beta in grading.BETAS if name == "swish" else (1.0,):
            args = (beta,) if name == "swish" else ()
            want_f, want_df = grading.reference(name, x64, beta)
            for func, want in ((f, want_f), (df, want_df)):
                got = func(xs, *args).double().numpy()
                tol = grading.N_OPS * grading.unit_roundoff(np.float32)
                tol = tol * (np.abs(want) + grading.SCALE[name](x64, beta))
                ok = (np.abs(got - want) <= tol / 4) | ((x64 == 0) & (name == "relu"))
                assert ok.all(), (name, x64[~ok])


def test_mistakes_are_named():
    ns = _answers("another-way")
    table = _table(ns)
    table["sigmoid"] = (table["sigmoid"][0], lambda x: torch.sigmoid(x))
    with pytest.raises(CheckFailed, match="That is sigma"):
        grading.check_derivatives(table)
    with pytest.raises(CheckFailed, match="keep the input's dtype"):
        grading.check_functions({"relu": (lambda x: x.double().clamp(min=0), None)})
