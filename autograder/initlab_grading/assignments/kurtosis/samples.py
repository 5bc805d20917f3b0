"""Sample submissions for assignment 5 (the kurtosis lab)."""

from initlab_grading.course.samples import Sample

_RECURSION = """

def kurtosis_recursion(kappa0, c0, depth, w, a, kappa_w, var_y=1.0):
    A = transition_matrix(w, a, kappa_w, var_y)
    rows = [np.array([kappa0, c0, 1.0])]
    for _ in range(depth):
        rows.append(A @ rows[-1])
    return np.array(rows)
"""


def _with_matrix(rows: str) -> str:
    return (
        "def transition_matrix(w, a, kappa_w, var_y=1.0):\n"
        "    v2 = var_y**2\n"
        "    r = 2 * (a**4 + 1) / (w * (a**2 + 1) ** 2)\n"
        f"    return np.array({rows})\n" + _RECURSION
    )


SAMPLES = [
    Sample("reference", "the reference answers: full marks on every test cell"),
    Sample("blank", "the release as handed out: zero on every test cell", blank=True),
    Sample(
        "written-another-way",
        "correct answers written another way: numpy weights converted to torch, an explicit "
        "loop over powers of A, an estimator with loops over pairs; must score full marks",
        answers={
            "he_transform": """
def he_transform(x, generator):
    w = len(x)
    W = torch.normal(0.0, 1.0, size=(w, w), generator=generator)
    return torch.mv(W, x.to(W.dtype))
""",
            "recursion": """
def transition_matrix(w, a, kappa_w, var_y=1.0):
    A = np.zeros((3, 3))
    A[0, 0] = 2 * (a**4 + 1) * kappa_w / (w * (a**2 + 1) ** 2)
    A[0, 1] = 3 * (w - 1) / (w * var_y * var_y)
    A[0, 2] = 3 * (w - 1) / w
    A[1, 0] = 2 * (a**4 + 1) * var_y * var_y / (w * (a**2 + 1) ** 2)
    A[1, 1] = (w - 1) / w
    A[1, 2] = -var_y * var_y / w
    A[2, 2] = 1.0
    return A


def kurtosis_recursion(kappa0, c0, depth, w, a, kappa_w, var_y=1.0):
    k0 = np.array([kappa0, c0, 1.0])
    A = transition_matrix(w, a, kappa_w, var_y)
    return np.stack([np.linalg.matrix_power(A, d) @ k0 for d in range(depth + 1)])
""",
            "estimator": """
def estimate_kappa_c(Y):
    Y = np.asarray(Y, dtype=np.float32)
    w = Y.shape[1]
    var = float(np.mean(Y.astype(np.float64) ** 2))
    kappa = np.mean([np.mean(Y[:, i].astype(np.float64) ** 4) for i in range(w)]) / var**2
    pairs = [
        np.mean(Y[:, i].astype(np.float64) ** 2 * Y[:, j].astype(np.float64) ** 2)
        for i in range(w) for j in range(w) if i != j
    ]
    return kappa, np.mean(pairs) - var**2
""",
        },
    ),
    Sample(
        "he-same-matrix",
        "he_transform re-seeds and draws the same W on every call",
        answers={
            "he_transform": """
def he_transform(x, generator):
    W = torch.randn(len(x), len(x), generator=torch.Generator().manual_seed(0))
    return W @ x
""",
        },
        lost={"test_he_transform": "the same W on every call"},
    ),
    Sample(
        "he-uniform-weights",
        "he_transform draws W uniform on [-1/2, 1/2] (variance 1/12) instead of standard normal",
        answers={
            "he_transform": """
def he_transform(x, generator):
    W = torch.rand(len(x), len(x), generator=generator, dtype=x.dtype) - 0.5
    return W @ x
""",
        },
        lost={"test_he_transform": "as with W uniform on [-1/2, 1/2]"},
    ),
    Sample(
        "matrix-transposed",
        "the 2 x 2 block of A transposed (rows and columns of kappa and c swapped); the "
        "recursion and growth rate built on it are graded with the reference A",
        answers={
            "recursion": _with_matrix(
                "[[r * kappa_w, r * v2, 3 * (w - 1) / w], "
                "[3 * (w - 1) / (w * v2), (w - 1) / w, -v2 / w], [0.0, 0.0, 1.0]]"
            )
        },
        lost={"test_transition_matrix": "looks transposed"},
    ),
    Sample(
        "pairs-not-w-minus-1",
        "the number of pairs taken as w^2 instead of w (w - 1): 3 instead of 3 (w - 1) / w; "
        "the slip costs test_transition_matrix only",
        answers={
            "recursion": _with_matrix(
                "[[r * kappa_w, 3 / v2, 3.0], [r * v2, (w - 1) / w, -v2 / w], [0.0, 0.0, 1.0]]"
            )
        },
        lost={"test_transition_matrix": "the pairs were counted as w^2"},
    ),
    Sample(
        "recursion-without-input-row",
        "kurtosis_recursion returns k^(1..depth) without the input row",
        answers={
            "recursion": _with_matrix(
                "[[r * kappa_w, 3 * (w - 1) / (w * v2), 3 * (w - 1) / w], "
                "[r * v2, (w - 1) / w, -v2 / w], [0.0, 0.0, 1.0]]"
            ).replace("    return np.array(rows)\n", "    return np.array(rows[1:])\n")
        },
        lost={"test_recursion": "expected depth + 1"},
    ),
    Sample(
        "growth-rate-norm",
        "growth rate taken as the spectral norm of A instead of its largest eigenvalue",
        answers={
            "growth": "def growth_rate(w, a, kappa_w):\n"
            "    return float(np.linalg.norm(transition_matrix(w, a, kappa_w)[:2, :2], 2))"
        },
        lost={"test_growth_rate": "That is the spectral norm"},
    ),
    Sample(
        "covariance-without-v-squared",
        "c estimated as E[y_i^2 y_j^2] without subtracting the squared variance v^2",
        answers={
            "estimator": """
def estimate_kappa_c(Y):
    Y = np.asarray(Y, dtype=float)
    sq = Y**2
    kappa = (sq**2).mean() / sq.mean() ** 2
    w = Y.shape[1]
    return kappa, ((sq.sum(axis=1) ** 2 - (sq**2).sum(axis=1)) / (w * (w - 1))).mean()
""",
        },
        lost={"test_estimate_kappa_c": "the covariance subtracts the squared variance"},
    ),
    Sample(
        "recursion-row-times-matrix",
        "the recursion as rows[-1] @ A, the row times A, which multiplies by A's transpose",
        answers={
            "recursion": _with_matrix(
                "[[r * kappa_w, 3 * (w - 1) / (w * v2), 3 * (w - 1) / w], "
                "[r * v2, (w - 1) / w, -v2 / w], [0.0, 0.0, 1.0]]"
            ).replace("rows.append(A @ rows[-1])", "rows.append(rows[-1] @ A)")
        },
        lost={"test_recursion": "multiplies by A's transpose"},
    ),
    Sample(
        "excess-kurtosis",
        "kappa from scipy.stats.kurtosis with its default fisher=True: the excess kurtosis "
        "kappa - 3",
        answers={
            "estimator": """
from scipy import stats


def estimate_kappa_c(Y):
    Y = np.asarray(Y, dtype=float)
    sq = Y**2
    v = sq.mean()
    w = Y.shape[1]
    pair_means = (sq.sum(axis=1) ** 2 - (sq**2).sum(axis=1)) / (w * (w - 1))
    return float(stats.kurtosis(Y, axis=None)), float(pair_means.mean() - v**2)
""",
        },
        lost={"test_estimate_kappa_c": "excess kurtosis"},
    ),
    Sample(
        "covariance-with-diagonal-pairs",
        "c averages y_i^2 y_j^2 over all w^2 pairs, the w pairs i = j included",
        answers={
            "estimator": """
def estimate_kappa_c(Y):
    Y = np.asarray(Y, dtype=float)
    sq = Y**2
    v = sq.mean()
    w = Y.shape[1]
    return (sq**2).mean() / v**2, (sq.sum(axis=1) ** 2 / w**2).mean() - v**2
""",
        },
        lost={"test_estimate_kappa_c": "includes the pairs i = j"},
    ),
]
