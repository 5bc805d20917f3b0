"""Sample submissions for assignment 5b (the kurtosis lab's deep dive)."""

from initlab_grading.course.samples import Sample

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
        "var-s2-normal-case",
        "Var[S_n^2] as 2 v^2 / (n - 1), the visible test's normal case, for every kappa",
        answers={
            "var_s2": "def var_sample_variance(kappa, var_x, n):\n    return 2 * var_x**2 / (n - 1)"
        },
        lost={"test_var_sample_variance": "the value for normal data only"},
    ),
    Sample(
        "var-s2-excess-kurtosis-formula",
        "Var[S_n^2] from the formula for the excess kurtosis, (kappa / n + 2 / (n - 1)) v^2, "
        "given the kurtosis itself",
        answers={
            "var_s2": "def var_sample_variance(kappa, var_x, n):\n"
            "    return (kappa / n + 2 / (n - 1)) * var_x**2"
        },
        lost={"test_var_sample_variance": "the formula for the excess kurtosis"},
    ),
    Sample(
        "var-s2-missing-parentheses",
        "Var[S_n^2] typed without the parentheses: kappa - (n - 3) / (n - 1) * v^2 / n",
        answers={
            "var_s2": "def var_sample_variance(kappa, var_x, n):\n"
            "    return kappa - (n - 3) / (n - 1) * var_x**2 / n"
        },
        lost={"test_var_sample_variance": "without parentheses only the fraction"},
    ),
    Sample(
        "zero-new-tensor",
        "zero_init_ returns a new identity instead of filling the weight",
        answers={"zero_init": "def zero_init_(tensor):\n    return torch.eye(tensor.shape[0])"},
        lost={"test_zero_init": "returned a new tensor and left the one it was given unchanged"},
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
    Sample(
        "zero-zeros",
        "zero_init_ fills the weight with zeros, taking ZerO's name literally",
        answers={
            "zero_init": "def zero_init_(tensor):\n"
            "    if tensor.shape[0] != tensor.shape[1]:\n"
            "        raise ValueError('ZerO needs a square weight')\n"
            "    with torch.no_grad():\n"
            "        return tensor.zero_()"
        },
        lost={"test_zero_init": "wrote zeros everywhere"},
    ),
    Sample(
        "zero-diagonal-only",
        "zero_init_ sets the diagonal to 1 and leaves the rest of the uninitialised weight as "
        "it was",
        answers={
            "zero_init": "def zero_init_(tensor):\n"
            "    if tensor.shape[0] != tensor.shape[1]:\n"
            "        raise ValueError('ZerO needs a square weight')\n"
            "    with torch.no_grad():\n"
            "        return tensor.fill_diagonal_(1.0)"
        },
        lost={"test_zero_init": "left the other entries as they were"},
    ),
    Sample(
        "zero-assert-square",
        "zero_init_ checks the shape with assert, so a weight that is not square raises "
        "AssertionError instead of ValueError",
        answers={
            "zero_init": "def zero_init_(tensor):\n"
            "    assert tensor.shape[0] == tensor.shape[1], 'ZerO needs a square weight'\n"
            "    with torch.no_grad():\n"
            "        return tensor.copy_(torch.eye(tensor.shape[0]))"
        },
        lost={"test_zero_init": "raised AssertionError"},
    ),
]
