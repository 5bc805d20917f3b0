"""The notation and API conventions of docs/conventions.md, checked where a program can:
in every master notebook (markdown and code) and in the answers of every sample."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from initlab_grading.course import layout
from initlab_grading.course.samples import samples_for

REPO = Path(__file__).resolve().parents[1]


def _cells(assignment: str) -> list[dict]:
    nb = json.loads((REPO / "source" / assignment / f"{assignment}.ipynb").read_text())
    return [{"type": c["cell_type"], "source": "".join(c["source"])} for c in nb["cells"]]


def _code(assignment: str) -> list[str]:
    """The code of the notebook's code cells and of every sample answer."""
    code = [c["source"] for c in _cells(assignment) if c["type"] == "code"]
    code += [text for s in samples_for(assignment) for text in s.answers.values()]
    return code


def _functions(source: str) -> list[ast.FunctionDef]:
    try:
        tree = ast.parse(source)
    except SyntaxError:  # a sample may hold a deliberately broken answer
        return []
    return [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)]


# σ is the sigmoid only: a variance is v or Var(.), a standard deviation s.
SIGMA_AS_SPREAD = re.compile(r"\\sigma\s*[\^_]|\bsigma(?:2|4|_?sq)\b|\bsigma\^|σ[²⁴]")
# In code and comments, sigma' is the sigmoid's derivative only: a general activation's is phi'.
SIGMA_AS_ACTIVATION = re.compile(r"(?:E\[|Var\[)sigma'|\(sigma' = 1\)|sigma' ~")
# φ is written \varphi, and derivatives are <name>_grad.
OTHER_PHI = re.compile(r"\\phi(?![a-zA-Z])")
OTHER_DERIVATIVE = re.compile(r"\b\w+_prime\b|\bd_?phi\b|\bdsigmoid\b|\bsigmoid_derivative\b")
# Rows are examples.
COLUMNS_AS_EXAMPLES = re.compile(r"\((?:n_?0|n_in|n_l|n_out), ?(?:batch|batch_size)\)")


@pytest.mark.parametrize("assignment", layout.ASSIGNMENTS)
def test_sigma_means_the_sigmoid_only(assignment):
    found = [m.group(0) for c in _cells(assignment) for m in SIGMA_AS_SPREAD.finditer(c["source"])]
    assert not found, f"{assignment}: σ used for a spread ({found}); write v, Var(.) or s"
    general = [m.group(0) for t in _code(assignment) for m in SIGMA_AS_ACTIVATION.finditer(t)]
    assert not general, f"{assignment}: a general activation's derivative is phi', not {general}"


@pytest.mark.parametrize("assignment", layout.ASSIGNMENTS)
def test_one_symbol_for_an_activation_and_one_name_for_derivatives(assignment):
    text = [c["source"] for c in _cells(assignment)] + _code(assignment)
    phi = [m.group(0) for t in text for m in OTHER_PHI.finditer(t)]
    derivative = [m.group(0) for t in text for m in OTHER_DERIVATIVE.finditer(t)]
    assert not phi, f"{assignment}: write \\varphi for an activation, not \\phi"
    assert not derivative, f"{assignment}: name derivatives <name>_grad, not {derivative}"


@pytest.mark.parametrize("assignment", layout.ASSIGNMENTS)
def test_rows_are_examples(assignment):
    text = [c["source"] for c in _cells(assignment) if c["type"] == "markdown"]
    found = [m.group(0) for t in text for m in COLUMNS_AS_EXAMPLES.finditer(t)]
    assert not found, f"{assignment}: a batch holds one example per row, found {found}"


DATA = ("X", "x", "var_x", "mean_x", "var_grad_out", "x0")
"""Arguments that are data or the data's moments: they come before parameters and sizes."""
LATER = ("params", "weights", "widths", "n_in", "n_out", "var_w", "weight_vars", "W")


@pytest.mark.parametrize("assignment", layout.ASSIGNMENTS)
def test_data_come_before_parameters_and_sizes(assignment):
    wrong = []
    for source in _code(assignment):
        for func in _functions(source):
            names = [a.arg for a in func.args.args]
            data = [i for i, n in enumerate(names) if n in DATA]
            later = [i for i, n in enumerate(names) if n in LATER]
            if data and later and min(later) < max(data) and func.name != "sgd_train":
                wrong.append(f"{func.name}({', '.join(names)})")
    assert not wrong, f"{assignment}: data first, then parameters and sizes: {sorted(set(wrong))}"


def test_the_checks_see_every_notebook():
    """The patterns above are not vacuous: each would flag what it forbids."""
    assert SIGMA_AS_SPREAD.search(r"variance $\sigma^2$") and SIGMA_AS_SPREAD.search("sigma2=1.0")
    assert not SIGMA_AS_SPREAD.search(r"$\sigma(x)(1 - \sigma(x))$ and $\sigma'(x)$")
    assert SIGMA_AS_ACTIVATION.search("use E[sigma'^2] (1), not Var[sigma'] (0)")
    assert OTHER_PHI.search(r"$\phi_a(x)$") and not OTHER_PHI.search(r"$\varphi(z)$")
    assert OTHER_DERIVATIVE.search("def sigmoid_prime(x):") and not OTHER_DERIVATIVE.search(
        "def sigmoid_grad(x):"
    )
    assert COLUMNS_AS_EXAMPLES.search("X of shape (n0, batch)")
    assert len(layout.ASSIGNMENTS) >= 9
