"""Sample submissions for assignment 4b (initialization, deep dive)."""

from initlab_grading.course.samples import Sample


def _products(update: str) -> str:
    """Part 3's random-matrix products with ``update`` as the line that moves v."""
    return f"""
n = budget.pick(grade=64, default=256, full=512)
depth = 60
gen = torch.Generator().manual_seed(0)
norms = {{}}
for scale in (0.8, 1.0, 1.25):
    start = v = torch.ones(n) / math.sqrt(n)
    history = []
    for _ in range(depth):
        {update}
        history.append(float(v.norm()))
    norms[scale] = history
"""


SAMPLES = [
    Sample("reference", "the reference answers: full marks on every test cell"),
    Sample("blank", "the release as handed out: zero on every test cell", blank=True),
    Sample(
        "written-another-way",
        "correct answers written another way: Var[XY] from second moments, E[z^2] as a sum "
        "of the variance and the squared mean, Skorski's scale with powers, the products "
        "with torch.mv and a normal of the scaled standard deviation; must score full marks",
        answers={
            "var_product": "def var_product(mean_x, var_x, mean_y, var_y):\n"
            "    return (var_x + mean_x**2) * (var_y + mean_y**2) - (mean_x * mean_y) ** 2",
            "second_moment": "def output_second_moment(mean_x, var_x, n_in, var_w):\n"
            "    return n_in * var_w * var_x + n_in * var_w * mean_x * mean_x",
            "skorski": "def skorski_std(n_in, n_out):\n    return (n_in**0.5 + n_out**0.5) ** -1",
            "products_demo": _products(
                "v = torch.mv(torch.normal(0.0, scale / n**0.5, (n, n), generator=gen), v)"
            ),
        },
    ),
    Sample(
        "var-product-zero-means",
        "Var[XY] = Var[X] Var[Y], which assumes zero means",
        answers={
            "var_product": "def var_product(mean_x, var_x, mean_y, var_y):\n"
            "    return var_x * var_y"
        },
        lost={"test_var_product": "holds only when both means are zero"},
    ),
    Sample(
        "second-moment-ignores-mean",
        "E[z^2] = n Var(w) Var(x), forgetting the inputs' mean",
        answers={
            "second_moment": "def output_second_moment(mean_x, var_x, n_in, var_w):\n"
            "    return n_in * var_w * var_x"
        },
        lost={"test_output_second_moment": "a nonzero mean adds"},
    ),
    Sample(
        "skorski-variance",
        "skorski_std returns the square of the standard deviation",
        answers={
            "skorski": "def skorski_std(n_in, n_out):\n"
            "    return 1.0 / (math.sqrt(n_in) + math.sqrt(n_out)) ** 2"
        },
        lost={"test_skorski_std": "That is the variance"},
    ),
    Sample(
        "products-scale-squared",
        "the random-matrix product of Part 3 draws entries with standard deviation scale**2 / "
        "sqrt(n), so its norm moves like scale^(2L)",
        answers={
            "products_demo": """
n = budget.pick(grade=64, default=256, full=512)
depth = 60
gen = torch.Generator().manual_seed(0)
norms = {}
for scale in (0.8, 1.0, 1.25):
    v = torch.ones(n) / math.sqrt(n)
    history = []
    for _ in range(depth):
        v = (torch.randn(n, n, generator=gen) * scale**2 / math.sqrt(n)) @ v
        history.append(float(v.norm()))
    norms[scale] = history
"""
        },
        lost={"test_products": "multiply by scale once"},
    ),
    Sample(
        "var-product-missing-term",
        "Var[XY] without the term Var[X] Var[Y]",
        answers={
            "var_product": "def var_product(mean_x, var_x, mean_y, var_y):\n"
            "    return var_x * mean_y**2 + var_y * mean_x**2"
        },
        lost={"test_var_product": "The term Var[X]Var[Y] is missing"},
    ),
    Sample(
        "skorski-one-root",
        "Skorski's scale with one square root over the sum of the fans",
        answers={
            "skorski": "def skorski_std(n_in, n_out):\n    return 1.0 / math.sqrt(n_in + n_out)"
        },
        lost={"test_skorski_std": "the square roots are taken separately"},
    ),
    Sample(
        "products-one-matrix",
        "every layer multiplies the starting vector instead of the previous layer's v",
        answers={
            "products_demo": _products(
                "v = (torch.randn(n, n, generator=gen) * scale / math.sqrt(n)) @ start"
            )
        },
        lost={"test_products": "multiply the previous layer's v"},
    ),
    Sample(
        "products-std-not-divided",
        "entries of standard deviation scale instead of scale / sqrt(n)",
        answers={"products_demo": _products("v = (torch.randn(n, n, generator=gen) * scale) @ v")},
        lost={"test_products": "the division by sqrt(n) is missing"},
    ),
    Sample(
        "var-product-second-moment",
        "Var[XY] as E[X^2] E[Y^2], the second moment of XY without subtracting E[XY]^2",
        answers={
            "var_product": "def var_product(mean_x, var_x, mean_y, var_y):\n"
            "    return (var_x + mean_x**2) * (var_y + mean_y**2)"
        },
        lost={"test_var_product": "That is E[(XY)^2]"},
    ),
    Sample(
        "skorski-xavier",
        "Xavier's standard deviation sqrt(2 / (n_in + n_out)) in place of Skorski's scale",
        answers={
            "skorski": "def skorski_std(n_in, n_out):\n    return math.sqrt(2.0 / (n_in + n_out))"
        },
        lost={"test_skorski_std": "That is Xavier's standard deviation"},
    ),
]
