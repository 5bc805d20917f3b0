"""Sample submissions for assignment 5b (the kurtosis lab's deep dive)."""

from initlab_grading.samples import Sample

SAMPLES = [
    Sample("reference", "the reference answers: full marks on every test cell"),
    Sample("blank", "the release as handed out: zero on every test cell", blank=True),
    Sample(
        "written-another-way",
        "correct answers written another way: Var[S_n^2] with 1 - 2 / (n - 1) for "
        "(n - 3) / (n - 1), a ZerO fill with fill_diagonal_; must score full marks",
        answers={
            "var_s2": "def var_sample_variance(kappa, var_x, n):\n"
            "    return (kappa - 1 + 2 / (n - 1)) * var_x * var_x / n",
            "zero_init": """
def zero_init_(tensor):
    if tensor.dim() != 2 or tensor.size(0) != tensor.size(1):
        raise ValueError("square weights only")
    with torch.no_grad():
        tensor.zero_().fill_diagonal_(1.0)
    return tensor
""",
        },
    ),
    Sample(
        "recursion-not-pasted",
        "the recursion from Assignment 5 left as handed out: Figure 1 and the explorer fail, "
        "no test cell depends on it, so every point stays",
        answers={"recursion": "# YOUR CODE HERE\nraise NotImplementedError()"},
    ),
    Sample(
        "var-s2-large-n",
        "Var[S_n^2] with the large-n limit (kappa - 1) v^2 / n",
        answers={
            "var_s2": "def var_sample_variance(kappa, var_x, n):\n"
            "    return (kappa - 1) * var_x**2 / n"
        },
        lost={"test_var_sample_variance": "large-n limit"},
    ),
    Sample(
        "var-s2-variance-not-squared",
        "Var[S_n^2] with the variance v where its square v^2 belongs",
        answers={
            "var_s2": "def var_sample_variance(kappa, var_x, n):\n"
            "    return (kappa - (n - 3) / (n - 1)) * var_x / n"
        },
        lost={"test_var_sample_variance": "var_x in place of its square"},
    ),
    Sample(
        "zero-new-tensor",
        "zero_init_ returns a new identity instead of filling the weight",
        answers={"zero_init": "def zero_init_(tensor):\n    return torch.eye(tensor.shape[0])"},
        lost={"test_zero_init": "in place"},
    ),
    Sample(
        "zero-any-shape",
        "zero_init_ fills any shape with a partial identity instead of refusing a weight that "
        "is not square",
        answers={
            "zero_init": "def zero_init_(tensor):\n"
            "    with torch.no_grad():\n"
            "        return tensor.copy_(torch.eye(*tensor.shape))"
        },
        lost={"test_zero_init": "did not raise"},
    ),
]
