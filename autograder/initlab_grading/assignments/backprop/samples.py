"""Sample submissions for assignment 2 (backpropagation)."""

from initlab_grading.course.samples import Sample

_TWO_LAYER_HEAD = """def two_layer_jacobians(x, V, c, W, b, phi2, phi1):
    z2 = V @ x + c
    z1 = W @ phi2[0](z2) + b
"""

_BACKWARD_HEAD = """def mlp_forward(X, weights, phi):
    Z, A = [None], [X]
    for W in weights:
        Z.append(A[-1] @ W.T)
        A.append(phi(Z[-1]))
    return Z, A


def mlp_backward(weights, Z, A, dL_dY, phi_grad):
    L = len(weights)
    grads = [None] * L
"""

FLOAT32_MLP = """
def mlp_forward(X, weights, phi):
    Z, A = [None], [np.asarray(X, dtype=np.float32)]
    for W in weights:
        Z.append(A[-1] @ np.asarray(W, dtype=np.float32).T)
        A.append(np.asarray(phi(Z[-1]), dtype=np.float32))
    return Z, A


def mlp_backward(weights, Z, A, dL_dY, phi_grad):
    L = len(weights)
    grads = [np.zeros(np.shape(W), dtype=np.float32) for W in weights]
    for j in range(np.shape(dL_dY)[0]):
        delta = np.float32(phi_grad(Z[L][j])) * np.float32(dL_dY[j])
        for l in range(L, 0, -1):
            grads[l - 1] += np.outer(delta, A[l - 1][j]).astype(np.float32)
            if l > 1:
                W = np.asarray(weights[l - 1], dtype=np.float32)
                delta = np.float32(phi_grad(Z[l - 1][j])) * (delta @ W)
    return grads
"""
"""The float32-loops sample's forward and backward pass, with a loop over the batch's rows
(one example each)."""

_RELATIVE_ERROR = """

def relative_error(a, b):
    scale = max(np.linalg.norm(a), np.linalg.norm(b))
    return 0.0 if scale == 0 else float(np.linalg.norm(np.subtract(a, b)) / scale)
"""
"""A correct relative_error, for samples whose mistake is in centred_difference."""

_NUMERIC_JACOBIAN = """
def numeric_jacobian(func, args, which, h=1e-6):
    args = [np.array(a, dtype=float) for a in args]
    out = np.asarray(func(*args))
    var = args[which]
    jac = np.zeros(out.shape + var.shape)
    for k in np.ndindex(var.shape):
        old = var[k]
        var[k] = old + h
        plus = np.asarray(func(*args))
        var[k] = old - h
        minus = np.asarray(func(*args))
        var[k] = old
        jac[(slice(None),) + k] = (plus - minus) / (2 * h)
    return jac"""

SAMPLES = [
    Sample("reference", "the reference answers: full marks on every test cell"),
    Sample("blank", "the release as handed out: zero on every test cell", blank=True),
    Sample(
        "float32-loops",
        "correct answers written another way: float32 arithmetic, explicit loops over indices, "
        "a batch loop in backprop; must score full marks",
        answers={
            "one_layer": """
def one_layer_jacobians(x, W, b, phi):
    x, W, b = (np.asarray(v, dtype=np.float32) for v in (x, W, b))
    n_out, n_in = W.shape
    z = W @ x + b
    d = np.asarray(phi[1](z), dtype=np.float32)
    jac = {k: np.zeros(s, dtype=np.float32) for k, s in [
        ("dz_dx", (n_out, n_in)), ("dz_dW", (n_out, n_out, n_in)), ("dz_db", (n_out, n_out)),
        ("dy_dx", (n_out, n_in)), ("dy_dW", (n_out, n_out, n_in)), ("dy_db", (n_out, n_out))]}
    for i in range(n_out):
        jac["dz_db"][i, i] = 1
        jac["dy_db"][i, i] = d[i]
        for k in range(n_in):
            jac["dz_dx"][i, k] = W[i, k]
            jac["dy_dx"][i, k] = d[i] * W[i, k]
            jac["dz_dW"][i, i, k] = x[k]
            jac["dy_dW"][i, i, k] = d[i] * x[k]
    return jac
""",
            "two_layer": """
def two_layer_jacobians(x, V, c, W, b, phi2, phi1):
    x, V, c, W, b = (np.asarray(v, dtype=np.float32) for v in (x, V, c, W, b))
    z2 = V @ x + c
    z1 = W @ phi2[0](z2).astype(np.float32) + b
    d1, d2 = phi1[1](z1).astype(np.float32), phi2[1](z2).astype(np.float32)
    n_out, n_hid = W.shape
    dy_dc = np.zeros((n_out, n_hid), dtype=np.float32)
    for i in range(n_out):
        for j in range(n_hid):
            dy_dc[i, j] = d1[i] * W[i, j] * d2[j]
    return {"dy_dx": dy_dc @ V, "dy_dV": dy_dc[:, :, None] * x[None, None, :], "dy_dc": dy_dc}
""",
            "three_layer": """
def three_layer_jacobians(x, U, d, V, c, W, b, phi3, phi2, phi1):
    x, U, d, V, c, W, b = (np.asarray(v, dtype=np.float32) for v in (x, U, d, V, c, W, b))
    z3 = U @ x + d
    z2 = V @ phi3[0](z3).astype(np.float32) + c
    z1 = W @ phi2[0](z2).astype(np.float32) + b
    J = np.diag(phi1[1](z1)).astype(np.float32) @ W
    J = J @ np.diag(phi2[1](z2)).astype(np.float32) @ V
    dy_dd = J @ np.diag(phi3[1](z3)).astype(np.float32)
    return {"dy_dx": dy_dd @ U, "dy_dU": np.einsum("ij,k->ijk", dy_dd, x), "dy_dd": dy_dd}
""",
            "mlp": FLOAT32_MLP,
        },
    ),
    Sample(
        "transposed-jacobian",
        "one-layer Jacobians with the input axis first: dy_dx = (phi' W)^T",
        answers={
            "one_layer": """
def one_layer_jacobians(x, W, b, phi):
    z = W @ x + b
    n_out = W.shape[0]
    d = phi[1](z)
    eye = np.eye(n_out)
    dz_dW = np.einsum("ij,k->ijk", eye, x)
    return {"dz_dx": W.T, "dz_dW": dz_dW, "dz_db": eye,
            "dy_dx": (d[:, None] * W).T, "dy_dW": d[:, None, None] * dz_dW, "dy_db": np.diag(d)}
""",
        },
        lost={"test_one_layer": "dz_dx has shape (3, 2); expected (2, 3): the first axis indexes"},
    ),
    Sample(
        "finite-difference-jacobian",
        "every Jacobian by centred finite differences of the network in float64, accurate "
        "to far better than float32 round-off, but no chain rule",
        answers={
            "one_layer": _NUMERIC_JACOBIAN
            + """

def one_layer_jacobians(x, W, b, phi):
    z_of = lambda x, W, b: W @ x + b
    y_of = lambda x, W, b: phi[0](W @ x + b)
    args = (x, W, b)
    return {"dz_dx": numeric_jacobian(z_of, args, 0), "dz_dW": numeric_jacobian(z_of, args, 1),
            "dz_db": numeric_jacobian(z_of, args, 2), "dy_dx": numeric_jacobian(y_of, args, 0),
            "dy_dW": numeric_jacobian(y_of, args, 1), "dy_db": numeric_jacobian(y_of, args, 2)}
""",
            "two_layer": """
def two_layer_jacobians(x, V, c, W, b, phi2, phi1):
    y_of = lambda x, V, c: phi1[0](W @ phi2[0](V @ x + c) + b)
    args = (x, V, c)
    return {"dy_dx": numeric_jacobian(y_of, args, 0), "dy_dV": numeric_jacobian(y_of, args, 1),
            "dy_dc": numeric_jacobian(y_of, args, 2)}
""",
            "three_layer": """
def three_layer_jacobians(x, U, d, V, c, W, b, phi3, phi2, phi1):
    y_of = lambda x, U, d: phi1[0](W @ phi2[0](V @ phi3[0](U @ x + d) + c) + b)
    args = (x, U, d)
    return {"dy_dx": numeric_jacobian(y_of, args, 0), "dy_dU": numeric_jacobian(y_of, args, 1),
            "dy_dd": numeric_jacobian(y_of, args, 2)}
""",
        },
        lost={
            "test_one_layer": "finite-difference (numerical) Jacobian earns no points",
            "test_two_layer": "finite-difference (numerical) Jacobian earns no points",
            "test_three_layer": "finite-difference (numerical) Jacobian earns no points",
        },
    ),
    Sample(
        "missing-phi-grad",
        "two-layer Jacobians without the hidden layer's phi2' factor",
        answers={
            "two_layer": _TWO_LAYER_HEAD
            + """    dy_dc = phi1[1](z1)[:, None] * W
    return {"dy_dx": dy_dc @ V, "dy_dV": np.einsum("ij,k->ijk", dy_dc, x), "dy_dc": dy_dc}
""",
        },
        lost={"test_two_layer": "is missing from the chain rule"},
    ),
    Sample(
        "wrong-summation-index",
        "three-layer Jacobians that sum over the first index of V (V^T in place of V)",
        answers={
            "three_layer": """
def three_layer_jacobians(x, U, d, V, c, W, b, phi3, phi2, phi1):
    z3 = U @ x + d
    z2 = V @ phi3[0](z3) + c
    z1 = W @ phi2[0](z2) + b
    dy_dc = phi1[1](z1)[:, None] * W * phi2[1](z2)[None, :]
    dy_dd = np.einsum("ij,kj->ik", dy_dc, V) * phi3[1](z3)[None, :]
    return {"dy_dx": dy_dd @ U, "dy_dU": np.einsum("ij,k->ijk", dy_dd, x), "dy_dd": dy_dd}
""",
        },
        lost={"test_three_layer": "wrong summation index"},
    ),
    Sample(
        "phi-grad-at-activation",
        "backprop that evaluates phi' at A[l] instead of Z[l]",
        answers={
            "mlp": _BACKWARD_HEAD
            + """    delta = phi_grad(A[L]) * dL_dY
    for l in range(L, 0, -1):
        grads[l - 1] = delta.T @ A[l - 1]
        if l > 1:
            delta = phi_grad(A[l - 1]) * (delta @ weights[l - 1])
    return grads
""",
        },
        lost={"test_backward": "instead of at the pre-activation Z^(l)"},
    ),
    Sample(
        "wrong-layer-weights",
        "backprop that sends Delta back through W^(l) instead of W^(l+1)",
        answers={
            "mlp": _BACKWARD_HEAD
            + """    delta = phi_grad(Z[L]) * dL_dY
    for l in range(L, 0, -1):
        grads[l - 1] = delta.T @ A[l - 1]
        if l > 1:
            delta = phi_grad(Z[l - 1]) * (delta @ weights[l - 2])
    return grads
""",
        },
        lost={"test_backward": "sent back through the wrong layer's W"},
    ),
    Sample(
        "transposed-gradient",
        "backprop that returns A^(l-1)^T Delta^(l), the transpose of each gradient",
        answers={
            "mlp": _BACKWARD_HEAD
            + """    delta = phi_grad(Z[L]) * dL_dY
    for l in range(L, 0, -1):
        grads[l - 1] = A[l - 1].T @ delta
        if l > 1:
            delta = phi_grad(Z[l - 1]) * (delta @ weights[l - 1])
    return grads
""",
        },
        lost={"test_backward": "A transposed gradient"},
    ),
    Sample(
        "bias-jacobian-ones",
        "one-layer Jacobians with dz_db a matrix of ones instead of the identity (and dy_db "
        "built from it)",
        answers={
            "one_layer": """
def one_layer_jacobians(x, W, b, phi):
    z = W @ x + b
    n_out = W.shape[0]
    d = phi[1](z)
    dz_db = np.ones((n_out, n_out))
    dz_dW = np.einsum("ij,k->ijk", np.eye(n_out), x)
    return {"dz_dx": W, "dz_dW": dz_dW, "dz_db": dz_db,
            "dy_dx": d[:, None] * W, "dy_dW": d[:, None, None] * dz_dW, "dy_db": d[:, None] * dz_db}
""",
        },
        lost={"test_one_layer": "dz_db is the identity matrix np.eye(n_out), not a matrix of ones"},
    ),
    Sample(
        "weight-jacobian-no-indicator",
        "one-layer Jacobians with dz_i/dW[j, k] = x_k for every i and j: the factor 1[i = j] "
        "left out (x tiled over both output axes)",
        answers={
            "one_layer": """
def one_layer_jacobians(x, W, b, phi):
    z = W @ x + b
    n_out = W.shape[0]
    d = phi[1](z)
    dz_dW = np.tile(x, (n_out, n_out, 1))
    return {"dz_dx": W, "dz_dW": dz_dW, "dz_db": np.eye(n_out),
            "dy_dx": d[:, None] * W, "dy_dW": d[:, None, None] * dz_dW, "dy_db": np.diag(d)}
""",
        },
        lost={"test_one_layer": "so dz_i/dW[j, k] = 1[i = j] x_k, zero for j != i"},
    ),
    Sample(
        "missing-output-phi-grad",
        "backprop that starts from Delta^(L) = dL/dY, without the output layer's phi'(Z^(L))",
        answers={
            "mlp": _BACKWARD_HEAD
            + """    delta = dL_dY
    for l in range(L, 0, -1):
        grads[l - 1] = delta.T @ A[l - 1]
        if l > 1:
            delta = phi_grad(Z[l - 1]) * (delta @ weights[l - 1])
    return grads
""",
        },
        lost={"test_backward": "of the output layer is missing"},
    ),
    Sample(
        "batch-mean-gradient",
        "backprop that divides every gradient by the batch size (the mean over the examples) "
        "where the loss sums them",
        answers={
            "mlp": _BACKWARD_HEAD
            + """    batch_size = dL_dY.shape[0]
    delta = phi_grad(Z[L]) * dL_dY
    for l in range(L, 0, -1):
        grads[l - 1] = delta.T @ A[l - 1] / batch_size
        if l > 1:
            delta = phi_grad(Z[l - 1]) * (delta @ weights[l - 1])
    return grads
""",
        },
        lost={"test_backward": "the sum divided by the batch size"},
    ),
]
