"""Assignment 2's references and hidden checks, tested directly (no nbgrader)."""

import re

import numpy as np
import pytest

from conftest import sample_answers
from initlab.checks import CheckFailed
from initlab_grading.assignments.backprop import grader as grading
from initlab_grading.checking.reveal import plain


def test_numpy_chain_rule_agrees_with_autograd():
    """The numpy chain rule used for the mistake variants is the autograd Jacobian when
    nothing is changed, so a variant differs from the reference only by its mistake."""
    for num_layers in (1, 2, 3):
        for case in grading.jacobian_cases(num_layers, 100 * num_layers):
            want, tol = grading._reference(case)
            mine = grading._with_derivative(case, 0, None)
            for key, var in grading._key_map(num_layers).items():
                if key.startswith("dy"):
                    assert np.all(np.abs(mine[key] - want[var]) <= tol[var])


def test_every_relu_case_keeps_its_margin():
    for num_layers in (1, 2, 3):
        for case in grading.jacobian_cases(num_layers, 100 * num_layers):
            grading._forward(case.layers, case.x)  # asserts the margin exceeds the error
    for case in grading.mlp_cases():
        zs = grading._mlp_forward_ref(case.weights, case.X, case.act)[0][1:]
        if case.act.kink:
            assert all(np.all(np.abs(z) >= grading.RELU_MARGIN) for z in zs)


def test_float32_answers_pass_every_check():
    ns = sample_answers("backprop", "float32-loops")
    for n, name in grading._FUNC_NAMES.items():
        grading.check_jacobians(ns[name], n)
    grading.check_forward(ns["mlp_forward"])
    grading.check_backward(ns["mlp_backward"])


def test_vectorised_float32_mlp_passes():
    """The batched float32 products (each entry of Z^(l) a sum over n_(l-1), each gradient
    entry a sum over the batch) stay within the per-row bounds plus the batch sum."""
    f32 = np.float32

    def mlp_forward(X, weights, phi):
        Z, A = [None], [np.asarray(X, dtype=f32)]
        for W in weights:
            Z.append(A[-1] @ np.asarray(W, dtype=f32).T)
            A.append(np.asarray(phi(Z[-1]), dtype=f32))
        return Z, A

    def mlp_backward(weights, Z, A, dL_dY, phi_grad):
        Z = [None] + [np.asarray(z, dtype=f32) for z in Z[1:]]
        A = [np.asarray(a, dtype=f32) for a in A]
        L = len(weights)
        grads = [None] * L
        delta = np.asarray(phi_grad(Z[L]), dtype=f32) * np.asarray(dL_dY, dtype=f32)
        for l in range(L, 0, -1):  # noqa: E741
            grads[l - 1] = delta.T @ A[l - 1]
            if l > 1:
                W = np.asarray(weights[l - 1], dtype=f32)
                delta = np.asarray(phi_grad(Z[l - 1]), dtype=f32) * (delta @ W)
        return grads

    grading.check_forward(mlp_forward)
    grading.check_backward(mlp_backward)


def test_a_forward_pass_with_one_example_per_column_is_named():
    def columns(X, weights, phi):
        Z, A = [None], [X.T]
        for W in weights:
            Z.append(W @ A[-1])
            A.append(phi(Z[-1]))
        return Z, [X] + A[1:]

    with pytest.raises(CheckFailed, match="one example per column; expected \\(2, 3\\)"):
        grading.check_forward(columns)


def test_a_gradient_off_by_more_than_the_bound_fails():
    def nudged(weights, Z, A, dL_dY, phi_grad):
        grads = [g.copy() for g in grading._mlp_grads_torch(case)]
        grads[0][0, 0] += 1e-3
        return grads

    case = grading.mlp_cases()[0]
    with pytest.raises(CheckFailed, match="gradient of W"):
        grading.check_backward(nudged)


# -- Part 1: shapes, named mistakes, and the chain rule itself ---------------------------


def test_jacobian_cases_cover_width_one_and_more_outputs_than_inputs():
    for num_layers in (1, 2, 3):
        cases = grading.jacobian_cases(num_layers, 100 * num_layers)
        widths = [[la.W.shape[1] for la in c.layers] + [c.layers[-1].W.shape[0]] for c in cases]
        assert any(1 in w for w in widths)
        assert any(w[-1] > w[0] for w in widths)
        assert sum(len(set(w)) == 1 for w in widths) >= 2  # square cases first
        assert all("np." not in c.label for c in cases)


def test_a_finite_difference_jacobian_fails_although_its_values_pass():
    ns = sample_answers("backprop", "finite-difference-jacobian")
    for n, name in grading._FUNC_NAMES.items():
        with pytest.raises(CheckFailed, match="numerical\\) Jacobian earns no points"):
            grading.check_jacobians(ns[name], n)


def test_a_finite_difference_that_calls_phi_grad_for_show_still_fails():
    ns = sample_answers("backprop", "finite-difference-jacobian")

    def disguised(x, W, b, phi):
        phi[1](W @ x + b)
        return ns["one_layer_jacobians"](x, W, b, phi)

    with pytest.raises(CheckFailed, match="not a pre-activation of layer 1"):
        grading.check_jacobians(disguised, 1)


def test_phi_grad_at_the_activation_is_named_in_jacobians():
    def at_activation(x, V, c, W, b, phi2, phi1):
        z2 = V @ x + c
        h = phi2[0](z2)
        z1 = W @ h + b
        dy_dc = phi1[1](z1)[:, None] * W * phi2[1](h)[None, :]
        return {"dy_dx": dy_dc @ V, "dy_dV": np.einsum("ij,k->ijk", dy_dc, x), "dy_dc": dy_dc}

    with pytest.raises(CheckFailed, match="phi2' is evaluated at the activation phi2\\(z\\)"):
        grading.check_jacobians(at_activation, 2)


def test_a_transposed_square_jacobian_gets_the_hidden_message():
    def transposed(x, W, b, phi):
        d = phi[1](W @ x + b)
        eye = np.eye(W.shape[0])
        dz_dW = np.einsum("ij,k->ijk", eye, x)
        return {"dz_dx": W.T, "dz_dW": dz_dW, "dz_db": eye, "dy_dx": (d[:, None] * W).T,
                "dy_dW": d[:, None, None] * dz_dW, "dy_db": np.diag(d)}  # fmt: skip

    assert grading.jacobian_cases(1, 100)[0].layers[0].W.shape == (4, 4)
    with pytest.raises(CheckFailed, match="widths \\[4, 4\\].*The Jacobian is transposed"):
        grading.check_jacobians(transposed, 1)


# -- Part 2: each derivative slip named, one layer at a time -----------------------------


def _backward_with(deriv_at):
    """mlp_backward (one example per row) whose phi' at layer l is
    ``deriv_at(l, L, Z, A, phi_grad)``."""

    def mlp_backward(weights, Z, A, dL_dY, phi_grad):
        L = len(weights)
        grads = [None] * L
        delta = deriv_at(L, L, Z, A, phi_grad) * dL_dY
        for l in range(L, 0, -1):  # noqa: E741
            grads[l - 1] = delta.T @ A[l - 1]
            if l > 1:
                delta = deriv_at(l - 1, L, Z, A, phi_grad) * (delta @ weights[l - 1])
        return grads

    return mlp_backward


def test_missing_phi_grad_at_the_output_layer_only_is_named():
    only_output = _backward_with(lambda k, L, Z, A, phi_grad: 1.0 if k == L else phi_grad(Z[k]))
    with pytest.raises(CheckFailed, match="phi'\\(Z\\^\\(3\\)\\) of the output layer is missing"):
        grading.check_backward(only_output)


def test_missing_phi_grad_everywhere_is_named():
    nowhere = _backward_with(lambda k, L, Z, A, phi_grad: 1.0)
    with pytest.raises(CheckFailed, match="missing from the recursion"):
        grading.check_backward(nowhere)


def test_phi_grad_at_the_activation_of_one_hidden_layer_is_named():
    one_layer = _backward_with(
        lambda k, L, Z, A, phi_grad: phi_grad(A[k]) if k == 2 else phi_grad(Z[k])
    )
    with pytest.raises(CheckFailed, match="At layer 2, phi' is evaluated at the activation"):
        grading.check_backward(one_layer)


def test_wrong_layer_and_transposed_gradients_are_named_by_the_hidden_check():
    """The samples' visible test stops these at a shape; on the square case the hidden check
    names them from the values."""
    for student, text in (
        ("wrong-layer-weights", "sent back through the wrong layer's W"),
        ("transposed-gradient", "A transposed gradient: grad W\\^\\(l\\) = Delta\\^\\(l\\)\\^T"),
    ):
        with pytest.raises(CheckFailed) as failure:
            grading.check_backward(sample_answers("backprop", student)["mlp_backward"])
        assert re.search(text, plain(str(failure.value))), str(failure.value)


# -- the factor 1[i = j] of one layer's Jacobians with respect to b and W ------------------


def _one_layer_with(dz_db=None, dz_dW=None, dy_db=None, dy_dW=None):
    """The reference one_layer_jacobians (float32) with some Jacobians replaced by
    ``f(x, W, d)``, d = phi'(z)."""

    def one_layer_jacobians(x, W, b, phi):
        x, W, b = (np.asarray(v, dtype=np.float32) for v in (x, W, b))
        n_out = W.shape[0]
        d = np.asarray(phi[1](W @ x + b), dtype=np.float32)
        eye = np.eye(n_out, dtype=np.float32)
        jac = {"dz_dx": W, "dz_dW": np.einsum("ij,k->ijk", eye, x), "dz_db": eye,
               "dy_dx": d[:, None] * W, "dy_db": np.diag(d)}  # fmt: skip
        jac["dy_dW"] = d[:, None, None] * jac["dz_dW"]
        for key, f in (("dz_db", dz_db), ("dz_dW", dz_dW), ("dy_db", dy_db), ("dy_dW", dy_dW)):
            if f is not None:
                jac[key] = f(x, W, d)
        return jac

    return one_layer_jacobians


def test_the_missing_indicator_is_named_for_each_jacobian_of_b_and_w():
    n = lambda W: W.shape[0]  # noqa: E731
    for key, f in (
        ("dz_db", lambda x, W, d: np.ones((n(W), n(W)), dtype=np.float32)),
        ("dz_dW", lambda x, W, d: np.tile(x, (n(W), n(W), 1))),
        ("dy_db", lambda x, W, d: d[:, None] * np.ones((n(W), n(W)), dtype=np.float32)),
        ("dy_db", lambda x, W, d: np.ones((n(W), n(W)), dtype=np.float32) * d),  # phi'(z_j)
        ("dy_dW", lambda x, W, d: d[:, None, None] * np.tile(x, (n(W), n(W), 1))),
        ("dy_dW", lambda x, W, d: d[None, :, None] * np.tile(x, (n(W), n(W), 1))),
    ):
        with pytest.raises(CheckFailed, match=f"^{key} from .*The factor 1\\[i = j\\] is missing"):
            grading.check_jacobians(_one_layer_with(**{key: f}), 1)


def test_the_indicator_diagnosis_stays_silent_for_right_and_unrelated_wrong_jacobians():
    grading.check_jacobians(_one_layer_with(), 1)  # float32, right
    for key, f in (
        ("dz_db", lambda x, W, d: 2 * np.eye(W.shape[0])),
        ("dy_db", lambda x, W, d: np.diag(d) + 1e-3),
        ("dy_dW", lambda x, W, d: np.tile(x, (W.shape[0], W.shape[0], 1))),  # no phi', no 1[i = j]
    ):
        with pytest.raises(CheckFailed, match=f"^{key} from") as info:
            grading.check_jacobians(_one_layer_with(**{key: f}), 1)
        assert "1[i = j]" not in str(info.value)
    with pytest.raises(CheckFailed) as info:
        grading.check_jacobians(
            sample_answers("backprop", "transposed-jacobian")["one_layer_jacobians"], 1
        )
    assert "1[i = j]" not in str(info.value)


def test_the_indicator_samples_are_named():
    for student in ("bias-jacobian-ones", "weight-jacobian-no-indicator"):
        func = sample_answers("backprop", student)["one_layer_jacobians"]
        with pytest.raises(CheckFailed, match="The factor 1\\[i = j\\] is missing"):
            grading.check_jacobians(func, 1)


# -- the batch mean where the loss sums the examples ----------------------------------------


def _scaled_backward(scale_of_batch):
    """The float32 reference backward pass with every gradient multiplied by
    ``scale_of_batch(batch_size)``."""
    f32 = np.float32

    def mlp_backward(weights, Z, A, dL_dY, phi_grad):
        L = len(weights)
        grads = [None] * L
        scale = f32(scale_of_batch(np.shape(dL_dY)[0]))
        delta = np.asarray(phi_grad(Z[L]) * dL_dY, dtype=f32)
        for l in range(L, 0, -1):  # noqa: E741
            grads[l - 1] = (delta.T @ np.asarray(A[l - 1], dtype=f32)) * scale
            if l > 1:
                W = np.asarray(weights[l - 1], dtype=f32)
                delta = np.asarray(phi_grad(Z[l - 1]), dtype=f32) * (delta @ W)
        return grads

    return mlp_backward


def test_the_batch_mean_is_named_in_float32_too():
    with pytest.raises(CheckFailed, match="the sum divided by the batch size"):
        grading.check_backward(_scaled_backward(lambda B: 1.0 / B))
    with pytest.raises(CheckFailed, match="the sum divided by the batch size"):
        grading.check_backward(sample_answers("backprop", "batch-mean-gradient")["mlp_backward"])


def test_the_batch_mean_diagnosis_stays_silent_for_right_and_unrelated_wrong_gradients():
    grading.check_backward(_scaled_backward(lambda B: 1.0))
    for wrong in (
        _scaled_backward(lambda B: 2.0),  # twice the sum
        sample_answers("backprop", "wrong-layer-weights")["mlp_backward"],
        sample_answers("backprop", "missing-output-phi-grad")["mlp_backward"],
    ):
        with pytest.raises(CheckFailed) as info:
            grading.check_backward(wrong)
        assert "mean over the batch" not in str(info.value)


def test_the_visible_test_names_the_batch_mean_and_only_it():
    import nbformat

    from conftest import REPO
    from initlab import checks

    nb = nbformat.read(REPO / "source" / "backprop" / "backprop.ipynb", as_version=4)
    cells = {c.id: c.source for c in nb.cells}
    visible = cells["test-backward"].split("### BEGIN HIDDEN TESTS")[0]
    ns = {"np": np, "checks": checks, **sample_answers("backprop", "batch-mean-gradient")}
    with pytest.raises(CheckFailed, match="the sum divided by the batch size"):
        exec(visible, ns)
    ns["mlp_backward"] = _scaled_backward(lambda B: 2.0)
    with pytest.raises(CheckFailed) as info:
        exec(visible, ns)
    assert "mean over the batch" not in str(info.value)
    ns["mlp_backward"] = _scaled_backward(lambda B: 1.0)
    exec(visible, ns)
