"""Sample submissions for assignment 2b (backpropagation, deep dive)."""

from initlab_grading.course.samples import Sample

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
"""Assignment 2's float32-loops answer for mlp_forward and mlp_backward (a batch loop, one
example at a time), pasted into the deep dive as a student would paste it."""

_RELATIVE_ERROR = """

def relative_error(a, b):
    scale = max(np.linalg.norm(a), np.linalg.norm(b))
    return 0.0 if scale == 0 else float(np.linalg.norm(np.subtract(a, b)) / scale)
"""
"""A correct relative_error, for samples whose mistake is in centred_difference."""

SAMPLES = [
    Sample("reference", "the reference answers: full marks on every test cell"),
    Sample("blank", "the release as handed out: zero on every test cell", blank=True),
    Sample(
        "float32-loops",
        "correct answers written another way: float32 arithmetic, explicit loops over indices, "
        "sigma' as sigma(x) sigma(-x), a batch loop in the pasted backprop; must score full marks",
        answers={
            "sigmoid": """
def sigmoid(x):
    x = np.asarray(x)
    out = np.empty_like(x)
    pos = x >= 0
    e = np.exp(-x[pos])
    out[pos] = 1 / (1 + e)
    e = np.exp(x[~pos])
    out[~pos] = e / (1 + e)
    return out


def sigmoid_grad(x):
    return sigmoid(x) * sigmoid(-np.asarray(x))
""",
            "mlp": FLOAT32_MLP,
            "gradcheck": """
def centred_difference(f, x, h):
    x = np.asarray(x, dtype=np.float32)
    flat = x.ravel()
    grad = np.empty_like(flat)
    h = np.float32(h)
    for i in range(flat.size):
        step = np.zeros_like(flat)
        step[i] = h
        f_plus = np.float32(f((flat + step).reshape(x.shape)))
        f_minus = np.float32(f((flat - step).reshape(x.shape)))
        grad[i] = (f_plus - f_minus) / (2 * h)
    return grad.reshape(x.shape)


def relative_error(a, b):
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    diff = np.sqrt(np.sum((a - b) ** 2))
    scale = max(np.sqrt(np.sum(np.square(a))), np.sqrt(np.sum(np.square(b))))
    return diff / scale if scale > 0 else np.float32(0.0)
""",
            "steps": "h_float64 = 1e-5\nh_float32 = 1e-2",
            "moments": """
def grad_weight_moments(
    widths, weight_vars, sp_mean, sp_sq_mean, a_mean, a_sq_mean, g_mean, g_sq_mean
):
    L = len(widths) - 1
    mean, var = [], []
    for l in range(1, L + 1):
        second = g_sq_mean * np.prod(np.float32(sp_sq_mean[l - 1:]))
        for k in range(l + 1, L + 1):
            second *= widths[k] * weight_vars[k - 1]
        m = sp_mean[-1] * g_mean * a_mean[-1] if l == L else 0.0
        mean.append(m)
        var.append(second * a_sq_mean[l - 1] - m**2)
    return np.float32(mean), np.float32(var)
""",
        },
    ),
    Sample(
        "sigmoid-overflow",
        "a sigmoid with np.where over both branches, which overflows for large |x|",
        answers={
            "sigmoid": """
def sigmoid(x):
    return np.where(x >= 0, 1 / (1 + np.exp(-x)), np.exp(x) / (1 + np.exp(x)))


def sigmoid_grad(x):
    return sigmoid(x) * sigmoid(-x)
""",
        },
        lost={"test_sigmoid": "np.where evaluates both"},
    ),
    Sample(
        "sigmoid-grad-cancels",
        "a stable sigmoid, but sigma' as the textbook s (1 - s): 1 - s cancels for large "
        "positive x (exactly 0 once s rounds to 1), so sigma' is not accurate relative to itself",
        answers={
            "sigmoid": """
def sigmoid(x):
    x = np.asarray(x)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def sigmoid_grad(x):
    s = sigmoid(x)
    return s * (1 - s)
""",
        },
        lost={"test_sigmoid": "1 - sigmoid(x) cancels"},
    ),
    Sample(
        "one-sided-difference",
        "a forward difference (f(x + h) - f(x)) / h instead of a centred one",
        answers={
            "gradcheck": """
def centred_difference(f, x, h):
    x = np.array(x, dtype=float)
    f0 = f(x)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        grad[i] = (f(x) - f0) / h
        x[i] = old
    return grad
"""
            + _RELATIVE_ERROR,
        },
        lost={"test_gradcheck": "one-sided difference"},
    ),
    Sample(
        "checker-not-restoring",
        "centred_difference moves x[i] by +h and -h but never puts it back: right on a "
        "separable function, wrong on any other",
        answers={
            "gradcheck": """
def centred_difference(f, x, h):
    x = np.array(x, dtype=float)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        x[i] += h
        up = f(x)
        x[i] -= 2 * h
        grad[i] = (up - f(x)) / (2 * h)
    return grad
"""
            + _RELATIVE_ERROR,
        },
        lost={"test_gradcheck": "several entries"},
    ),
    Sample(
        "borrowed-checker",
        "centred_difference delegated to scipy's internal three-point difference (right "
        "values), relative_error to initlab's rel_error",
        answers={
            "gradcheck": """
from scipy.optimize._numdiff import approx_derivative
from initlab.checks import rel_error


def centred_difference(f, x, h):
    x = np.asarray(x, dtype=float)
    flat = approx_derivative(
        lambda v: f(v.reshape(x.shape)), x.ravel(), method="3-point", abs_step=h
    )
    return flat.reshape(x.shape)


def relative_error(a, b):
    return rel_error(a, b)
""",
        },
        lost={"test_gradcheck": "calling a library's finite-difference or error helpers"},
    ),
    Sample(
        "one-sided-step",
        "steps sqrt(eps), the best step of a one-sided difference",
        answers={
            "steps": "h_float64 = np.sqrt(np.finfo(np.float64).eps)\n"
            "h_float32 = np.sqrt(np.finfo(np.float32).eps)",
        },
        lost={"test_steps": "best step of a one-sided difference"},
    ),
    Sample(
        "zero-mean-phi-grad",
        "the course material's slip: Var[phi'] (zero mean assumed) where E[phi'^2] belongs",
        answers={
            "moments": """
def grad_weight_moments(
    widths, weight_vars, sp_mean, sp_sq_mean, a_mean, a_sq_mean, g_mean, g_sq_mean
):
    L = len(widths) - 1
    sp_var = [q - p * p for p, q in zip(sp_mean, sp_sq_mean)]
    mean, var = np.zeros(L), np.zeros(L)
    delta_sq = sp_var[L - 1] * g_sq_mean
    for l in range(L, 0, -1):
        if l < L:
            delta_sq = sp_var[l - 1] * widths[l + 1] * weight_vars[l] * delta_sq
        m = sp_mean[L - 1] * g_mean * a_mean[L - 1] if l == L else 0.0
        mean[l - 1] = m
        var[l - 1] = delta_sq * a_sq_mean[l - 1] - m * m
    return mean, var
""",
        },
        lost={
            "test_moments": "does not have zero mean",
            "test_moments_monte_carlo": "does not have zero mean",
        },
    ),
    Sample(
        "planted-bug-wrong-line",
        "the planted bug blamed on line (b), the gradient of W^(l), instead of line (d)",
        answers={"planted_bug": 'bug_line = "b"'},
        lost={"test_planted_bug": "line (b) is right"},
    ),
    Sample(
        "squared-mean-phi-grad",
        "E[phi']^2 (the square of the mean, sp_mean squared) where E[phi'^2] (sp_sq_mean) belongs",
        answers={
            "moments": """
def grad_weight_moments(
    widths, weight_vars, sp_mean, sp_sq_mean, a_mean, a_sq_mean, g_mean, g_sq_mean
):
    L = len(widths) - 1
    mean, var = np.zeros(L), np.zeros(L)
    delta_sq = sp_mean[L - 1] ** 2 * g_sq_mean
    for l in range(L, 0, -1):
        if l < L:
            delta_sq = sp_mean[l - 1] ** 2 * widths[l + 1] * weight_vars[l] * delta_sq
        m = sp_mean[L - 1] * g_mean * a_mean[L - 1] if l == L else 0.0
        mean[l - 1] = m
        var[l - 1] = delta_sq * a_sq_mean[l - 1] - m * m
    return mean, var
""",
        },
        lost={
            "test_moments": "E[phi']^2 where E[phi'^2] belongs",
            "test_moments_monte_carlo": "E[phi']^2 where E[phi'^2] belongs",
        },
    ),
    Sample(
        "fan-in-width",
        "the sum over the layer above counted with n^(l) = widths[l], the layer's own width, "
        "instead of n^(l+1) = widths[l + 1]",
        answers={
            "moments": """
def grad_weight_moments(
    widths, weight_vars, sp_mean, sp_sq_mean, a_mean, a_sq_mean, g_mean, g_sq_mean
):
    L = len(widths) - 1
    mean, var = np.zeros(L), np.zeros(L)
    delta_sq = sp_sq_mean[L - 1] * g_sq_mean
    for l in range(L, 0, -1):
        if l < L:
            delta_sq = sp_sq_mean[l - 1] * widths[l] * weight_vars[l] * delta_sq
        m = sp_mean[L - 1] * g_mean * a_mean[L - 1] if l == L else 0.0
        mean[l - 1] = m
        var[l - 1] = delta_sq * a_sq_mean[l - 1] - m * m
    return mean, var
""",
        },
        lost={
            "test_moments": "not n^(l) = widths[l]",
            "test_moments_monte_carlo": "not n^(l) = widths[l]",
        },
    ),
    Sample(
        "tiny-step",
        "steps 1e-12 and 1e-6, far below eps^(1/3): a smaller step taken for a more accurate one",
        answers={"steps": "h_float64 = 1e-12\nh_float32 = 1e-6"},
        lost={"test_steps": "a smaller step is not a more accurate one"},
    ),
]
