"""Detection of answers that call the library implementing what is graded."""

import torch

from initlab import checks
from initlab_grading.integrity import uses_library


def test_direct_attribute_and_helper_uses_are_found():
    def direct(t):
        return torch.nn.init.normal_(t)

    def via_alias(f, x, h):
        return checks.numerical_gradient(f, x, h)

    def helper(f, x, h):
        return via_alias(f, x, h)

    assert uses_library(direct, ("torch.nn.init",)) == "torch.nn.init"
    assert uses_library(via_alias, ("initlab",)) == "initlab.checks"
    assert uses_library(helper, ("initlab",)) == "initlab.checks"


def test_own_code_is_not_flagged():
    def own(t):
        with torch.no_grad():
            return t.normal_(0.0, 1.0)

    assert uses_library(own, ("torch.nn.init", "initlab")) is None
