"""Assignment 3's references and hidden checks, tested directly (no nbgrader)."""

import re

import numpy as np
import pytest
import torch

from initlab.checks import CheckFailed
from initlab_grading.assignments.activations import grader as grading
from initlab_grading.assignments.activations.samples import _REFERENCE_ACTIVATIONS
from initlab_grading.checking.reveal import plain
from initlab_grading.course.samples import samples_for

NAMES = ("relu", "sigmoid", "tanh", "swish", "mish")


def _answers(student):
    (sample,) = [s for s in samples_for("activations") if s.student == student]
    namespace = {"np": np, "torch": torch}
    for source in sample.answers.values():
        exec(source, namespace)
    return namespace


def _table(ns):
    return {n: (ns[n], ns[f"{n}_grad"]) for n in NAMES}


def _reference_with(extra: str = "") -> dict:
    """The reference activations as a notebook defines them (module ``__main__``), with
    ``extra`` run after them (a redefinition replaces one answer)."""
    namespace = {"np": np, "torch": torch, "__name__": "__main__"}
    exec(_REFERENCE_ACTIVATIONS + "\n" + extra, namespace)
    return _table(namespace)


def _interpolant(n: int):
    """d' = n hinges interpolating x^2 at k / n: error 1 / (4 n^2), at the midpoints."""
    knots = np.arange(n) / n
    slopes = (2 * knots + 1 / n).astype(np.float64)  # chord slope on [k/n, (k+1)/n]
    return np.ones(n), -knots, np.diff(np.concatenate([[0.0], slopes])), 0.0


# --------------------------------------------------------------------------------------
# Part 1


def test_the_seed_construction_has_error_exactly_0_04_and_passes():
    err, where = grading.sup_error(grading.SEED_W1, grading.SEED_B1, grading.SEED_W2, 0.0)
    assert err == pytest.approx(0.04, abs=1e-15) and where == pytest.approx(0.8)
    # also with its parameters rounded to float32 (0.2, 0.6, 0.12 ... are not float32 numbers)
    f32 = [a.astype(np.float32) for a in (grading.SEED_W1, grading.SEED_B1, grading.SEED_W2)]
    grading.check_relu_net(3, *f32, np.float32(0))


def test_sup_error_is_exact_between_grid_points():
    """A single hinge whose worst point (a tangent point) is not on the dense grid."""
    a = 1.0 / 3.0  # g(x) = a x - c: max of g - x^2 at x = a / 2 = 1/6
    err, where = grading.sup_error([a], [0.0], [1.0], -0.01)
    want = max(abs(a * x - 0.01 - x * x) for x in (0.0, a / 2, 1.0))
    assert err == pytest.approx(want, abs=1e-15)


def test_sup_error_of_the_widest_net_is_exact_in_bounded_memory():
    """At d' = MAX_HIDDEN the n-piece interpolant's error 1 / (4 n^2) is found exactly (at
    a tangent point: the grid there has only 10,001 points), blockwise, without the
    (100,001 x d') array that used to be built."""
    import tracemalloc

    n = grading.MAX_HIDDEN
    W1, b1, W2, b2 = _interpolant(n)
    tracemalloc.start()
    try:
        err, _ = grading.sup_error(W1, b1, W2, b2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # round-off of g at x <= 1: (n + 2) float64 operations on terms summing to <= 3
    assert abs(err - 1 / (4 * n * n)) <= (n + 2) * 2.0**-53 * 3
    assert peak < 64e6, f"sup_error used {peak / 1e6:.0f} MB"


def test_a_net_just_over_the_bound_fails():
    with pytest.raises(CheckFailed, match="largest error"):
        grading.check_relu_net(3, grading.SEED_W1, grading.SEED_B1, grading.SEED_W2, 1e-4)


def test_an_interpolating_net_with_pieces_too_wide_is_told_so():
    """The n-piece interpolant has error exactly 1 / (4 n^2): 1/16 for n = 2, named with its
    piece width; a net off x^2 at its breakpoints (shifted) is not called an interpolant."""
    with pytest.raises(CheckFailed) as failure:
        grading.check_relu_net(2, *_interpolant(2))
    assert "0.062500 on a piece of width 0.5. Use pieces" in plain(str(failure.value))
    grading.check_relu_net(3, *_interpolant(3))  # 1/36 < 0.04
    W1, b1, W2, _ = _interpolant(2)
    with pytest.raises(CheckFailed, match="largest error") as info:
        grading.check_relu_net(2, W1, b1, W2, -0.001)
    assert "breakpoints and at 0 and 1" not in str(info.value)
    with pytest.raises(CheckFailed, match="largest error") as info:
        grading.check_relu_net(3, grading.SEED_W1, grading.SEED_B1, grading.SEED_W2, 1e-4)
    assert "breakpoints and at 0 and 1" not in str(info.value)


def test_flipped_bias_signs_get_the_hint():
    with pytest.raises(CheckFailed, match="With the signs of b1 flipped"):
        grading.check_relu_net(3, grading.SEED_W1, -grading.SEED_B1, grading.SEED_W2, 0.0)


@pytest.mark.parametrize(
    ("d_hidden", "message"),
    [
        (4, "d_hidden is 4 but W1, b1 and W2 have 3 entries"),
        (2.5, "a whole number"),
        (0, "a whole number, at least 1"),
        ([3, 3], "a whole number"),
    ],
)
def test_d_hidden_must_be_the_width(d_hidden, message):
    with pytest.raises(CheckFailed, match=message):
        grading.check_relu_net(
            d_hidden, grading.SEED_W1, grading.SEED_B1, grading.SEED_W2, grading.SEED_B2
        )
    grading.check_relu_net(3.0, grading.SEED_W1, grading.SEED_B1, grading.SEED_W2, 0.0)
    grading.check_relu_net(np.int64(3), grading.SEED_W1, grading.SEED_B1, grading.SEED_W2, 0.0)


def test_a_net_wider_than_the_grader_takes_gets_a_message():
    n = grading.MAX_HIDDEN + 1
    with pytest.raises(CheckFailed, match=f"{n} hidden units; the grader evaluates nets of"):
        grading.check_relu_net(n, *_interpolant(n))


# --------------------------------------------------------------------------------------
# Part 2


def test_reference_and_another_way_pass_every_check():
    for table in (_reference_with(), _table(_answers("another-way"))):
        grading.check_functions(table)
        grading.check_derivatives(table)
        grading.check_large_inputs(table)
    ns = _answers("another-way")
    grading.check_relu_net(ns["d_hidden"], ns["W1"], ns["b1"], ns["W2"], ns["b2"])
    grading.check_split(ns["train_idx"], ns["val_idx"])
    grading.check_split(grading.TRAIN_IDX, grading.VAL_IDX)


CORRECT_MISH = {
    "F.mish": "def mish(x):\n    return torch.nn.functional.mish(x)",
    "tanh-of-F.softplus": (
        "import torch.nn.functional as F\ndef mish(x):\n    return x * torch.tanh(F.softplus(x))"
    ),
    "log1p-exp": "def mish(x):\n    return x * torch.tanh(torch.log1p(torch.exp(x)))",
    "logaddexp": "def mish(x):\n    return x * torch.tanh(torch.logaddexp(x, torch.zeros_like(x)))",
    "numpy-float64": (
        "def mish(x):\n    a = x.numpy().astype(np.float64)\n"
        "    return torch.from_numpy(a * np.tanh(np.logaddexp(0.0, a))).to(x.dtype)"
    ),
}
"""Correct ways to write mish: each passes every check."""


def test_torch_float32_is_within_the_derived_tolerance_everywhere():
    """The reference formulas, another way's and the correct mish variants, in float32 and
    float64, against autograd in float64, use at most a quarter of the allowed difference
    (a margin test for the N_OPS = 32 bound and the magnitudes c(x) of grading.tolerance)."""
    tables = [_table(_answers("another-way")), _reference_with()]
    tables += [_reference_with(source) for source in CORRECT_MISH.values()]
    for dtype, tdtype in ((np.float32, torch.float32), (np.float64, torch.float64)):
        xs = torch.tensor(np.concatenate([grading.MODERATE, grading.LARGE]), dtype=tdtype)
        x64 = xs.double().numpy()
        for table in tables:
            for name, (f, df) in table.items():
                for beta in grading.BETAS if name == "swish" else (1.0,):
                    args = (beta,) if name == "swish" else ()
                    want_f, want_df = grading.reference(name, x64, beta)
                    for func, want, derivative in ((f, want_f, False), (df, want_df, True)):
                        got = func(xs, *args).double().numpy()
                        tol = grading.tolerance(name, derivative, x64, want, beta, dtype)
                        ok = np.abs(got - want) <= tol / 4
                        ok |= (x64 == 0) & (name == "relu")
                        assert ok.all(), (name, derivative, dtype, x64[~ok])


@pytest.mark.parametrize("source", CORRECT_MISH.values(), ids=CORRECT_MISH.keys())
def test_correct_ways_to_write_mish_pass(source):
    table = _reference_with(source)
    grading.check_functions(table)
    grading.check_large_inputs(table)


NAIVE_SOFTPLUS = "def _softplus(x):\n    return torch.log(1 + torch.exp(x))\n"


def test_mish_with_softplus_as_log_of_1_plus_exp_fails_with_its_diagnosis():
    """log(1 + exp(x)) is right in absolute terms only: in float32 it is exactly 0 below
    -16.6, so mish is 0 at -20, -25 and -30 where it is about x e^x; on -10..10 its relative
    error (about 1e-3 near x = -10 in float32) is far above the relative round-off bound."""
    table = _table(_answers("mish-naive-softplus"))
    x = torch.tensor([-20.0, -25.0, -30.0])
    assert torch.all(table["mish"][0](x) == 0)
    assert torch.all(torch.log1p(torch.exp(x)) > 0)  # log1p keeps them: the fix is right
    x = torch.tensor(grading.MODERATE, dtype=torch.float32)
    want, _ = grading.reference("mish", x.double().numpy())
    error = np.abs(table["mish"][0](x).double().numpy() - want) / np.abs(want + 1e-300)
    assert error.max() > 50 * grading.N_OPS * grading.unit_roundoff(np.float32)  # about 1e-3
    with pytest.raises(CheckFailed, match=r"softplus is computed as log\(1 \+ exp\(x\)\)"):
        grading.check_functions(table)
    grading.check_derivatives(table)
    grading.check_large_inputs(table)  # finite everywhere: charged once
    # the same helper in the slope costs the derivatives cell, with the same diagnosis
    slope = NAIVE_SOFTPLUS + (
        "def mish_grad(x):\n    t = torch.tanh(_softplus(x))\n"
        "    return t + x * (1 - t**2) * torch.sigmoid(x)"
    )
    with pytest.raises(CheckFailed, match=r"softplus is computed as log\(1 \+ exp\(x\)\)"):
        grading.check_derivatives(_reference_with(slope))


def test_mish_right_on_moderate_inputs_but_naive_far_out_fails_there():
    """The large-|x| inputs -20, -25 and -30 catch log(1 + exp(x)) used only far out (float64
    is checked first: there the first one reached is -300)."""
    source = NAIVE_SOFTPLUS + (
        "import torch.nn.functional as F\n"
        "def mish(x):\n    sp = torch.where(x > -15, F.softplus(x), _softplus(x))\n"
        "    return x * torch.tanh(sp)"
    )
    table = _reference_with(source)
    grading.check_functions(table)
    with pytest.raises(CheckFailed) as failure:
        grading.check_large_inputs(table)
    assert re.search(r"at x = -300;.*log\(1 \+ exp\(x\)\)", plain(str(failure.value)))


@pytest.mark.parametrize(
    "answer",
    [
        "def sigmoid(x):\n    return (1 + torch.tanh(x / 2)) / 2",
        "def sigmoid_grad(x):\n    return (1 - torch.tanh(x / 2) ** 2) / 4",
        "def swish(x, beta=1.0):\n    return x * (1 - torch.sigmoid(-beta * x))",
    ],
    ids=["sigmoid-through-tanh", "sigmoid-slope-through-tanh", "swish-one-minus"],
)
def test_small_values_lost_to_round_off_are_named(answer):
    """Right in absolute terms, wrong relative to the small values for negative x: the
    message says so (and not the mish-specific softplus words)."""
    table = _reference_with(answer)
    with pytest.raises(CheckFailed, match=r"loses the\s+digits of a small number") as info:
        check = grading.check_derivatives if "_grad" in answer else grading.check_functions
        check(table)
    assert "log(1 + exp(x))" not in str(info.value)
    grading.check_large_inputs(table)


@pytest.mark.parametrize(
    "answer",
    [
        "def mish(x):\n    return x * torch.tanh(x)",
        "def mish(x):\n    return x * torch.tanh(torch.nn.functional.softplus(x)) + 1e-3",
        "def sigmoid(x):\n    return torch.sigmoid(x) * (1 + 1e-4)",
    ],
    ids=["mish-tanh-of-x", "mish-shifted", "sigmoid-scaled"],
)
def test_the_small_values_diagnosis_fires_only_for_answers_right_in_absolute_terms(answer):
    table = _reference_with(answer)
    with pytest.raises(CheckFailed) as info:
        grading.check_functions(table)
    assert "digits of a small number" not in str(info.value)
    assert "log(1 + exp(x))" not in str(info.value)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ("def sigmoid_grad(x):\n    return torch.sigmoid(x)", r"That is sigma\(x\) itself"),
        ("def tanh_grad(x):\n    return 1 - torch.tanh(x)", r"That is 1 - tanh\(x\);"),
        (
            "def swish_grad(x, beta=1.0):\n    s = torch.sigmoid(beta * x)\n"
            "    return s + x * s * (1 - s)",
            "The factor beta is missing",
        ),
        (
            "def mish_grad(x):\n    return torch.tanh(torch.nn.functional.softplus(x))",
            "Only the first term is there",
        ),
    ],
    ids=["sigma", "tanh-unsquared", "swish-no-beta", "mish-one-term"],
)
def test_common_derivative_mistakes_are_named_and_cost_one_cell(answer, message):
    table = _reference_with(answer)
    grading.check_functions(table)
    with pytest.raises(CheckFailed) as failure:
        grading.check_derivatives(table)
    assert re.search(message, plain(str(failure.value))), str(failure.value)
    grading.check_large_inputs(table)  # finite far out: not charged a second time


def test_dtype_is_checked():
    with pytest.raises(CheckFailed, match="keep the input's dtype"):
        grading.check_functions({"relu": (lambda x: x.double().clamp(min=0), None)})


BORROWED = {
    "autograd-grad": """
def mish_grad(x):
    x = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(mish(x).sum(), x)
    return g""",
    "enable-grad": """
def mish_grad(x):
    with torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(mish(x).sum(), x)
    return g""",
    "set-grad-enabled-backward": """
def relu_grad(x):
    torch.set_grad_enabled(True)
    x = x.detach().clone().requires_grad_(True)
    relu(x).sum().backward()
    torch.set_grad_enabled(False)
    return x.grad""",
    "private-grad-switch": """
def sigmoid_grad(x):
    torch._C._set_grad_enabled(True)
    x = x.detach().clone().requires_grad_(True)
    y = sigmoid(x).sum()
    torch._C._set_grad_enabled(False)
    return torch.autograd.grad(y, x)[0]""",
    "imported-grad": """
from torch.autograd import grad
def tanh_grad(x):
    with torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        return grad(tanh(x).sum(), x)[0]""",
    "jacobian": """
def tanh_grad(x):
    return torch.autograd.functional.jacobian(tanh, x).diagonal()""",
    "func-grad": """
def mish_grad(x):
    return torch.func.vmap(torch.func.grad(mish))(x)""",
    "func-jvp": """
def swish_grad(x, beta=1.0):
    return torch.func.jvp(lambda t: swish(t, beta), (x,), (torch.ones_like(x),))[1]""",
    "forward-ad": """
import torch.autograd.forward_ad as fwAD
def swish_grad(x, beta=1.0):
    with fwAD.dual_level():
        dual = fwAD.make_dual(x, torch.ones_like(x))
        return fwAD.unpack_dual(swish(dual, beta)).tangent""",
    "aten-backward-kernel": """
def sigmoid_grad(x):
    return torch.ops.aten.sigmoid_backward(torch.ones_like(x), torch.sigmoid(x))""",
    "enable-grad-through-getattr": """
def mish_grad(x):
    with getattr(torch, "enable_" + "grad")():
        x = x.detach().clone().requires_grad_(True)
        y = mish(x).sum()
    y.backward()
    return x.grad""",
    "aten-through-getattr": """
def tanh_grad(x):
    kernel = getattr(torch.ops.aten, "tanh_" + "backward")
    return kernel(torch.ones_like(x), torch.tanh(x))""",
    "aten-alias": """
aten = torch.ops.aten
def tanh_grad(x):
    return aten.tanh_backward(torch.ones_like(x), torch.tanh(x))""",
    "engine-helper": """
from initlab import _batched
def mish_grad(x):
    return _batched._activation_backward("mish", torch.ones_like(x), x, None, None)""",
    "engine-through-a-helper": """
from initlab._batched import _activation_backward
def _slope(x):
    return _activation_backward("tanh", torch.ones_like(x), x, torch.tanh(x), None)
def tanh_grad(x):
    return _slope(x)""",
}


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.parametrize("answer", BORROWED.values(), ids=BORROWED.keys())
def test_a_derivative_not_written_by_hand_fails_derivatives_only(answer):
    """Every way torch (or initlab) can differentiate for the student is refused with a
    message; the same answer's large-|x| point is not taken a second time."""
    table = _reference_with(answer)
    with pytest.raises(CheckFailed, match="asks for the derivative by hand") as info:
        grading.check_derivatives(table)
    assert "uses" in str(info.value) or "differentiates with torch" in str(info.value)
    grading.check_large_inputs(table)
    assert torch.is_grad_enabled()  # an answer that switches grad mode leaves it as it was


def test_what_the_static_check_cannot_see_is_caught_while_the_answer_runs():
    """A name computed at run time escapes the bytecode check; the run-time layer names
    what the answer did instead."""
    table = _reference_with(BORROWED["enable-grad-through-getattr"])
    with pytest.raises(CheckFailed, match="differentiates with torch: autograd switched back on"):
        grading.check_derivatives(table)


def test_value_functions_and_own_helpers_are_allowed_in_derivatives():
    """torch.nn.functional's activations, torch.sigmoid / exp / log1p, and the student's own
    functions are building blocks, not differentiation."""
    table = _reference_with(
        """
import torch.nn.functional as F
def swish_grad(x, beta=1.0):
    s = F.sigmoid(beta * x)
    return s + F.silu(beta * x) * (1 - s)      # beta x s (1 - s) = silu(beta x) (1 - s)
def mish_grad(x):
    t = torch.tanh(F.softplus(x))
    return t + x * (1 - t * t) * torch.exp(-F.softplus(-x))   # exp(-softplus(-x)) = sigma(x)
def sigmoid_grad(x):
    return sigmoid(x) * sigmoid(-x)
"""
    )
    grading.check_derivatives(table)
    grading.check_large_inputs(table)


def test_large_inputs_charge_only_what_the_other_cells_do_not():
    """Overflow (non-finite) and a formula right on -10..10 but wrong far out lose the
    large-|x| point; the values elsewhere are fine."""
    overflow = _reference_with(
        "def swish_grad(x, beta=1.0):\n    e = torch.exp(-beta * x)\n"
        "    return (1 + e + x * beta * e) / (1 + e) ** 2"
    )
    grading.check_derivatives(overflow)
    with pytest.raises(CheckFailed, match="it must be finite for every x"):
        grading.check_large_inputs(overflow)
    clamped = _reference_with(
        "def mish(x):\n    x = torch.clamp(x, -20, 20)\n"
        "    return x * torch.tanh(torch.nn.functional.softplus(x))"
    )
    grading.check_functions(clamped)
    with pytest.raises(CheckFailed) as failure:
        grading.check_large_inputs(clamped)
    assert re.search(r"mish in float64 is .* at x = -1000; expected", plain(str(failure.value)))
    wrong_and_overflowing = _reference_with(
        "def sigmoid_grad(x):\n    return torch.exp(-x) / (1 + torch.exp(-x)) ** 3"
    )
    with pytest.raises(CheckFailed, match="sigmoid_grad"):
        grading.check_derivatives(wrong_and_overflowing)
    with pytest.raises(CheckFailed, match="it must be finite for every x"):
        grading.check_large_inputs(wrong_and_overflowing)


# --------------------------------------------------------------------------------------
# The notebook


def test_hidden_tests_run_before_the_visible_ones(repo):
    """In every graded code cell of the master the hidden region comes first (after the
    comment lines), so a hidden check's specific message is what grading reports."""
    import nbformat

    graded = []
    for assignment in ("activations", "activations_deep_dive"):
        nb = nbformat.read(repo / f"source/{assignment}/{assignment}.ipynb", as_version=4)
        graded += [
            c
            for c in nb.cells
            if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")
        ]
    assert len(graded) == 10  # the test cells of Assignment 3's Parts 1, 2 to 4, and 3b's 2 to 4
    for cell in graded:
        before = cell.source.split("### BEGIN HIDDEN TESTS")[0]
        code = [ln for ln in before.splitlines() if ln.strip() and not ln.startswith("#")]
        assert not code, (cell.id, code)


# --------------------------------------------------------------------------------------
# Part 4: the student's network and training loop


def _loop(student: str = "reference") -> dict:
    """The namespace of a sample's network-and-loop cell (the reference by default)."""
    from initlab_grading.assignments.activations.samples import _REFERENCE_LOOP

    if student == "reference":
        source = _REFERENCE_LOOP
    else:
        (sample,) = [s for s in samples_for("activations") if s.student == student]
        source = sample.answers["mlp_training"]
    namespace = {"np": np, "torch": torch}
    exec(source, namespace)
    return namespace


@pytest.mark.parametrize("student", ["reference", "another-way"])
def test_correct_networks_and_loops_pass(student):
    ns = _loop(student)
    grading.check_forward(ns["mlp_forward"])
    grading.check_training_loop(ns["sgd_train"])


@pytest.mark.parametrize("variant", sorted(grading.LOOP_VARIANTS))
def test_each_loop_mistake_gets_its_own_diagnosis(variant):
    kwargs, words = grading.LOOP_VARIANTS[variant]

    def wrong(params, batches, forward, lr):
        return grading.reference_loop(params, batches, forward, lr, **kwargs)

    with pytest.raises(CheckFailed) as failure:
        grading.check_training_loop(wrong)
    assert words in str(failure.value)
    # and no other diagnosis fires for it
    others = [w for key, (_, w) in grading.LOOP_VARIANTS.items() if key != variant]
    assert not any(w in str(failure.value) for w in others)


def test_no_loop_diagnosis_matches_the_correct_trajectory():
    """A diagnosis fires only when its condition holds: the correct losses are far from
    every wrong variant's, so a correct loop can never be named by one."""
    run, params, batches = grading.engine_trajectory("relu", 3)

    def forward(X, p):
        return grading.reference_forward(X, p, torch.relu)

    want = run.history["train_loss"]
    for kwargs, _ in grading.LOOP_VARIANTS.values():
        variant, _ = grading.reference_loop(params, batches, forward, grading.LOOP_LR, **kwargs)
        assert np.max(np.abs(np.asarray(variant) - want) / want) > 1e-4


@pytest.mark.parametrize("words", sorted(grading.FORWARD_VARIANTS))
def test_each_forward_mistake_gets_its_own_diagnosis(words):
    variant = grading.FORWARD_VARIANTS[words]
    with pytest.raises(CheckFailed, match=words.split(":")[0]):
        grading.check_forward(variant)


def test_a_loop_that_trains_the_given_weights_in_place_is_told_so():
    from initlab_grading.assignments.activations.samples import _loop_with

    namespace = {"np": np, "torch": torch}
    exec(
        _loop_with(
            "(W.detach().clone().requires_grad_(True), b.detach().clone().requires_grad_(True))",
            "(W.requires_grad_(True), b.requires_grad_(True))",
        ),
        namespace,
    )
    with pytest.raises(CheckFailed, match="changed the weights it was given"):
        grading.check_training_loop(namespace["sgd_train"])


def test_float32_arithmetic_is_named():
    ns = _loop()

    def forward32(X, params, phi):
        return ns["mlp_forward"](X.float(), [(W.float(), b.float()) for W, b in params], phi)

    with pytest.raises(CheckFailed, match="float32"):
        grading.check_forward(forward32)

    def loop32(params, batches, forward, lr):
        losses, trained = ns["sgd_train"](
            [(W.float(), b.float()) for W, b in params],
            [(X.float(), y) for X, y in batches],
            lambda X, p: forward(X.double(), [(W.double(), b.double()) for W, b in p]).float(),
            lr,
        )
        return losses, trained

    with pytest.raises(CheckFailed, match="float32"):
        grading.check_training_loop(loop32)


def test_the_loop_tolerance_covers_round_off_as_derived():
    """LOOP_RTOL's derivation assumes the four steps amplify a perturbation of the starting
    weights by at most 1.5 ** 4: measure that factor (relative perturbations of 1e-7 in a
    few random directions), and the engine's actual distance from the reference loop."""
    for name, phi, seed in (("relu", torch.relu, 3), ("tanh", torch.tanh, 4)):
        run, params, batches = grading.engine_trajectory(name, seed)

        def forward(X, p, phi=phi):
            return grading.reference_forward(X, p, phi)

        base, trained = grading.reference_loop(params, batches, forward, grading.LOOP_LR)
        gen = torch.Generator().manual_seed(0)
        for _ in range(3):
            delta = 1e-7
            moved = [
                (W * (1 + delta * torch.randn(W.shape, generator=gen, dtype=W.dtype)), b)
                for W, b in params
            ]
            start = max(
                float((W1 - W0).abs().max() / W0.abs().max())
                for (W1, _), (W0, _) in zip(moved, params, strict=True)
            )
            _, after = grading.reference_loop(moved, batches, forward, grading.LOOP_LR)
            end = max(
                float((W1 - W0).abs().max() / W0.abs().max())
                for (W1, _), (W0, _) in zip(after, trained, strict=True)
            )
            assert end / start < 1.5**4, f"{name}: amplification {end / start:.3g}"
        err = np.max(
            np.abs(np.asarray(base) - run.history["train_loss"]) / run.history["train_loss"]
        )
        assert err < 1.6e-11, f"{name}: engine against the reference loop, {err:.3g} relative"


@pytest.mark.parametrize(
    "val_idx, words",
    [
        (np.arange(2_400), "it is the first 2,400"),
        (np.arange(4_800, 7_200), "a block from index 4,800 to 7,199"),
        (np.random.default_rng(0).permutation(12_000)[:2_400], "like a random sample"),
    ],
)
def test_split_messages_say_what_the_validation_set_is(val_idx, words):
    train_idx = np.setdiff1d(np.arange(12_000), val_idx)
    with pytest.raises(CheckFailed, match=words):
        grading.check_split(train_idx, val_idx)


def test_a_boolean_relu_grad_costs_the_derivatives_cell_only():
    table = _reference_with("def relu_grad(x):\n    return x > 0")
    grading.check_functions(table)
    with pytest.raises(CheckFailed, match="keep the input's dtype"):
        grading.check_derivatives(table)
    grading.check_large_inputs(table)
