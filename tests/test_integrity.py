"""Detection of answers that call the library implementing what is graded."""

import types

import torch
from torch import nn

from initlab import checks, engine
from initlab_grading.checking.integrity import uses_library


def test_direct_attribute_and_helper_uses_are_found():
    def direct(t):
        return torch.nn.init.normal_(t)

    def via_alias(f, x, h):
        return checks.rel_error(f(x), f(x + h))

    def helper(f, x, h):
        return via_alias(f, x, h)

    assert uses_library(direct, ("torch.nn.init",)) == "torch.nn.init"
    assert uses_library(via_alias, ("initlab",)) == "initlab.checks"
    assert uses_library(helper, ("initlab",)) == "initlab.checks"


def test_imports_inside_the_answer_are_found():
    def from_import(t):
        from torch.nn import init

        return init.normal_(t)

    def dotted(t):
        import torch.nn.init as library

        return library.normal_(t)

    def initlab_module(n_in, n_out):
        from initlab import engine as e

        return e.init_std("xavier", n_in, n_out)

    def initlab_submodule(n_in, n_out):
        import initlab.engine

        return initlab.engine.init_std("xavier", n_in, n_out)

    assert uses_library(from_import, ("torch.nn.init",)) == "torch.nn.init"
    assert uses_library(dotted, ("torch.nn.init",)) == "torch.nn.init"
    assert uses_library(initlab_module, ("torch.nn.init", "initlab")) == "initlab"
    assert uses_library(initlab_submodule, ("initlab",)) == "initlab.engine"


def test_modules_and_functions_in_globals_and_defaults_are_found():
    def module_global(n_in, n_out):
        return engine.init_std("xavier", n_in, n_out)

    def default_argument(t, fill=torch.nn.init.xavier_normal_):
        return fill(t)

    assert uses_library(module_global, ("initlab",)) == "initlab.engine"
    assert uses_library(default_argument, ("torch.nn.init",)) == "torch.nn.init.xavier_normal_"


_ONE = torch.tensor(1.0)


def test_own_code_is_not_flagged():
    def own(t, scale=_ONE):
        with torch.no_grad():
            return t.normal_(0.0, float(scale))

    def uses_functional(x):
        return torch.nn.functional.relu(x)

    assert uses_library(own, ("torch.nn.init", "initlab")) is None
    assert uses_library(uses_functional, ("torch.nn.init", "initlab", "torch.func")) is None


_DERIVATIVE_LIBRARIES = ("torch.autograd", "torch.func", "torch._functorch", "torch.ops")


def test_forbidden_modules_reached_through_attributes_are_found():
    def attribute_of_global(x):
        return torch.func.grad(torch.sin)(x)

    def alias_imported_inside(x):
        import torch as t

        return t.autograd.grad(x, x)

    def submodule_imported_inside(x):
        from torch import func

        return func.vmap(torch.sin)(x)

    def reexported(x):  # torch.vmap is torch.func's
        return torch.vmap(torch.sin)(x)

    def raw_operator(x):
        return torch.ops.aten.tanh_backward(x, x)

    def in_a_nested_function(x):
        def inner(y):
            return torch.autograd.grad(y, y)

        return inner(x)

    def nn_alias(t):
        return nn.init.normal_(t)

    found = {
        f.__name__: uses_library(f, _DERIVATIVE_LIBRARIES)
        for f in (
            attribute_of_global,
            alias_imported_inside,
            submodule_imported_inside,
            reexported,
            raw_operator,
            in_a_nested_function,
        )
    }
    assert found == {
        "attribute_of_global": "torch.func",
        "alias_imported_inside": "torch.autograd",
        "submodule_imported_inside": "torch.func",
        "reexported": "torch.vmap (torch.func.vmap)",
        "raw_operator": "torch.ops",
        "in_a_nested_function": "torch.autograd",
    }
    assert uses_library(nn_alias, ("torch.nn.init",)) == "torch.nn.init"


def test_names_that_only_look_like_a_forbidden_module_are_not_flagged():
    def own_attribute_named_init(layer):
        layer.init = 1.0  # "nn" and "init" both among the code's names, no torch.nn.init
        return nn.Linear(2, 2)

    def functional_is_not_func(x):
        return torch.nn.functional.softplus(x) + torch.functional.F.relu(x)

    assert uses_library(own_attribute_named_init, ("torch.nn.init", "initlab")) is None
    assert uses_library(functional_is_not_func, _DERIVATIVE_LIBRARIES) is None


def _copy(function, module_name="__main__"):
    """``function`` rebuilt from its code with a copy of its globals, its module renamed:
    nothing about it names the library but the file its code was compiled from."""
    names = dict(function.__globals__, __name__=module_name)
    copy = types.FunctionType(
        function.__code__, names, function.__name__, function.__defaults__, function.__closure__
    )
    copy.__module__ = module_name
    return copy


def test_copies_of_library_functions_are_found():
    assert "a copy of its normal_" in uses_library(_copy(torch.nn.init.normal_), ("torch.nn.init",))
    assert "initlab (a copy of its" in uses_library(_copy(engine.init_std), ("initlab",))
    assert uses_library(_copy(torch.nn.init.normal_), ("initlab",)) is None

    def own(t):
        return t.normal_()

    assert uses_library(_copy(own), ("torch.nn.init", "initlab")) is None
