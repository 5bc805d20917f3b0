"""Sample submissions for assignment 4 (initialization)."""

from initlab_grading.course.samples import Sample

_FANS = """
def fan_in_and_fan_out(tensor):
    receptive_field = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive_field, tensor.shape[0] * receptive_field
"""

_XAVIER_NORMAL = """
def xavier_normal_(tensor, gain=1.0):
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    with torch.no_grad():
        return tensor.normal_(0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))
"""

_XAVIER_UNIFORM = """
def xavier_uniform_(tensor, gain=1.0):
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        return tensor.uniform_(-bound, bound)
"""

_COPIED_XAVIER = """
import types


def _copied(module):
    names = dict(vars(module), __name__=__name__)
    for key, value in list(names.items()):
        if isinstance(value, types.FunctionType) and value.__module__ == module.__name__:
            copy = types.FunctionType(
                value.__code__, names, key, value.__defaults__, value.__closure__
            )
            copy.__kwdefaults__ = value.__kwdefaults__
            copy.__module__ = __name__
            names[key] = copy
    return names


xavier_normal_ = _copied(torch.nn.init)["xavier_normal_"]
"""

_PATCHED_STATS = """
import scipy.stats
from types import SimpleNamespace

scipy.stats.kstest = lambda *args, **kwargs: SimpleNamespace(statistic=0.0, pvalue=1.0)
scipy.stats.norm.isf = lambda *args, **kwargs: float("inf")


def xavier_normal_(tensor, gain=1.0):
    with torch.no_grad():
        return tensor.zero_()
"""

_GAIN = """
def calculate_gain(nonlinearity, param=None):
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 0.75
    return 1.0
"""


def _kaiming(normal_body: str = "", uniform_body: str = "", gain: str = _GAIN) -> str:
    normal_body = normal_body or (
        "    std = calculate_gain(nonlinearity, a) / math.sqrt(fan)\n"
        "    with torch.no_grad():\n"
        "        return tensor.normal_(0.0, std)\n"
    )
    uniform_body = uniform_body or (
        "    bound = math.sqrt(3.0) * calculate_gain(nonlinearity, a) / math.sqrt(fan)\n"
        "    with torch.no_grad():\n"
        "        return tensor.uniform_(-bound, bound)\n"
    )
    head = (
        '(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu"):\n'
        "    fan_in, fan_out = fan_in_and_fan_out(tensor)\n"
        '    fan = fan_in if mode == "fan_in" else fan_out\n'
    )
    return (
        gain
        + "\n\ndef kaiming_normal_"
        + head
        + normal_body
        + "\n\ndef kaiming_uniform_"
        + head
        + uniform_body
    )


SAMPLES = [
    Sample("reference", "the reference answers: full marks on every test cell"),
    Sample("blank", "the release as handed out: zero on every test cell", blank=True),
    Sample(
        "written-another-way",
        "correct answers written another way: loops instead of cumprod, float32 arithmetic, "
        "a uniform drawn as an affine map of U(0, 1), a normal drawn into a new tensor and "
        "copied in place; must score full marks",
        answers={
            "variance_flow": """
def forward_variances(var_x, widths, weight_vars):
    out, current = [], np.float32(var_x)
    for n_prev, v in zip(widths[:-1], weight_vars):
        current = current * np.float32(n_prev) * np.float32(v)
        out.append(current)
    return np.array(out)


def backward_variances(var_grad_out, widths, weight_vars):
    L = len(weight_vars)
    return np.array([
        var_grad_out * np.prod([widths[k] * weight_vars[k - 1] for k in range(l + 1, L + 1)])
        for l in range(1, L + 1)
    ])


def weight_grad_variances(var_x, var_grad_out, widths, weight_vars):
    fwd = [var_x] + list(forward_variances(var_x, widths, weight_vars))
    bwd = backward_variances(var_grad_out, widths, weight_vars)
    return np.array([bwd[l] * fwd[l] for l in range(len(weight_vars))])
""",
            "xavier": _FANS
            + """

def xavier_normal_(tensor, gain=1.0):
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    with torch.no_grad():
        tensor.copy_(torch.randn(tensor.shape) * (gain * (2.0 / (fan_in + fan_out)) ** 0.5))
    return tensor


def xavier_uniform_(tensor, gain=1.0):
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        tensor.uniform_(0.0, 1.0).mul_(2 * bound).sub_(bound)
    return tensor
""",
        },
    ),
    Sample(
        "forward-own-width",
        "forward variances multiply each layer's own width n_l instead of its fan-in n_(l-1)",
        answers={
            "variance_flow": """
def forward_variances(var_x, widths, weight_vars):
    return var_x * np.cumprod(np.asarray(widths[1:], float) * np.asarray(weight_vars))


def backward_variances(var_grad_out, widths, weight_vars):
    n, v = np.asarray(widths, float), np.asarray(weight_vars, float)
    tail = np.cumprod((n[1:] * v)[::-1])[::-1]
    return var_grad_out * np.append(tail[1:], 1.0)


def weight_grad_variances(var_x, var_grad_out, widths, weight_vars):
    n, v = np.asarray(widths, float), np.asarray(weight_vars, float)
    inputs = var_x * np.concatenate([[1.0], np.cumprod(n[:-1] * v)[:-1]])
    return backward_variances(var_grad_out, widths, weight_vars) * inputs
""",
        },
        lost={"test_forward_variances": "Each layer used its own width"},
    ),
    Sample(
        "backward-reversed",
        "backward variances returned output layer first",
        answers={
            "variance_flow": """
def forward_variances(var_x, widths, weight_vars):
    n, v = np.asarray(widths, float), np.asarray(weight_vars, float)
    return var_x * np.cumprod(n[:-1] * v)


def backward_variances(var_grad_out, widths, weight_vars):
    n, v = np.asarray(widths, float), np.asarray(weight_vars, float)
    tail = np.cumprod((n[1:] * v)[::-1])[::-1]
    return (var_grad_out * np.append(tail[1:], 1.0))[::-1]


def weight_grad_variances(var_x, var_grad_out, widths, weight_vars):
    inputs = np.concatenate([[var_x], forward_variances(var_x, widths, weight_vars)[:-1]])
    return backward_variances(var_grad_out, widths, weight_vars)[::-1] * inputs
""",
        },
        lost={"test_backward_variances": "reverse order"},
    ),
    Sample(
        "xavier-std-is-variance",
        "xavier_normal_ uses the variance 2 / (fan_in + fan_out) as the standard deviation",
        answers={
            "xavier": _FANS
            + """

def xavier_normal_(tensor, gain=1.0):
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    with torch.no_grad():
        return tensor.normal_(0.0, gain * 2.0 / (fan_in + fan_out))
"""
            + _XAVIER_UNIFORM
        },
        lost={"test_xavier_normal": "used as the standard deviation"},
    ),
    Sample(
        "xavier-uniform-sqrt3-over-n",
        "xavier_uniform_ with bound sqrt(3 / fan_in) instead of sqrt(6 / (fan_in + fan_out))",
        answers={
            "xavier": _FANS
            + _XAVIER_NORMAL
            + """

def xavier_uniform_(tensor, gain=1.0):
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(3.0 / fan_in)
    with torch.no_grad():
        return tensor.uniform_(-bound, bound)
"""
        },
        lost={"test_xavier_uniform": "a bound sqrt(3 / fan_in)"},
    ),
    Sample(
        "xavier-new-tensor",
        "xavier_normal_ returns a new tensor instead of filling the one it is given",
        answers={
            "xavier": _FANS
            + """

def xavier_normal_(tensor, gain=1.0):
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    return torch.randn(tensor.shape) * gain * math.sqrt(2.0 / (fan_in + fan_out))
"""
            + _XAVIER_UNIFORM
        },
        lost={
            "test_xavier_normal": "must fill the tensor it is given in place",
        },
    ),
    Sample(
        "fans-without-receptive-field",
        "fans of convolution kernels without the receptive field; the initialisers built on "
        "them are graded with the reference fans, so the slip costs test_fans only",
        answers={
            "xavier": """
def fan_in_and_fan_out(tensor):
    return tensor.shape[1], tensor.shape[0]
"""
            + _XAVIER_NORMAL
            + _XAVIER_UNIFORM
        },
        lost={
            "test_fans": "receptive field",
        },
    ),
    Sample(
        "kaiming-no-gain",
        "kaiming_normal_ forgets the gain: std 1 / sqrt(fan) (the ReLU factor 2 is missing)",
        answers={
            "kaiming": _kaiming(
                normal_body="    with torch.no_grad():\n"
                "        return tensor.normal_(0.0, 1.0 / math.sqrt(fan))\n"
            )
        },
        lost={"test_kaiming_normal": "the ReLU factor 2 is missing"},
    ),
    Sample(
        "kaiming-gain-twice",
        "kaiming_uniform_ multiplies by the gain twice",
        answers={
            "kaiming": _kaiming(
                uniform_body="    g = calculate_gain(nonlinearity, a)\n"
                "    bound = math.sqrt(3.0) * g * g / math.sqrt(fan)\n"
                "    with torch.no_grad():\n"
                "        return tensor.uniform_(-bound, bound)\n"
            )
        },
        lost={"test_kaiming_uniform": "the gain applied twice"},
    ),
    Sample(
        "leaky-slope-ignored",
        "calculate_gain ignores the negative slope of leaky_relu",
        answers={
            "kaiming": _kaiming(
                gain=_GAIN.replace(
                    "        slope = 0.01 if param is None else param\n"
                    "        return math.sqrt(2.0 / (1 + slope**2))\n",
                    "        return math.sqrt(2.0)\n",
                )
            )
        },
        lost={
            "test_gain": "The negative slope a is ignored",
        },
    ),
    Sample(
        "kaiming-calls-torch",
        "kaiming_normal_ calls torch.nn.init.kaiming_normal_",
        answers={
            "kaiming": _kaiming(
                normal_body="    return torch.nn.init.kaiming_normal_(\n"
                "        tensor, a, mode, nonlinearity\n"
                "    )\n"
            )
        },
        lost={"test_kaiming_normal": "earns no points"},
    ),
    Sample(
        "library-gain-and-fans",
        "calculate_gain and fan_in_and_fan_out call torch.nn.init's own: their cells earn "
        "nothing; the initialisers built on them are graded with the references and keep "
        "their points",
        answers={
            "xavier": """
def fan_in_and_fan_out(tensor):
    return torch.nn.init._calculate_fan_in_and_fan_out(tensor)
"""
            + _XAVIER_NORMAL
            + _XAVIER_UNIFORM,
            "kaiming": _kaiming(
                gain="def calculate_gain(nonlinearity, param=None):\n"
                "    return torch.nn.init.calculate_gain(nonlinearity, param)\n"
            ),
        },
        lost={
            "test_fans": "earns no points",
            "test_gain": "earns no points",
        },
    ),
    Sample(
        "xavier-without-no-grad",
        "xavier_normal_ fills the tensor without torch.no_grad(): fine on a plain tensor, an "
        "error on a weight that requires grad",
        answers={
            "xavier": _FANS
            + """

def xavier_normal_(tensor, gain=1.0):
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    return tensor.normal_(0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))
"""
            + _XAVIER_UNIFORM
        },
        lost={"test_xavier_normal": "inside `with torch.no_grad():`"},
    ),
    Sample(
        "kaiming-average-no-gain",
        "the averaged-fan Kaiming initialiser without ReLU's gain: Xavier's variance",
        answers={
            "kaiming_average": """
def kaiming_average_normal_(tensor):
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    with torch.no_grad():
        return tensor.normal_(0.0, 1.0 / math.sqrt((fan_in + fan_out) / 2))
"""
        },
        lost={"test_kaiming_average": "gain sqrt(2) is missing"},
    ),
    Sample(
        "copied-torch-init",
        "xavier_normal_ is torch.nn.init's own, rebuilt from its code with copies of its "
        "globals and helpers under the notebook's module name, so that nothing it names is "
        "torch.nn.init",
        answers={"xavier": _FANS + _COPIED_XAVIER + _XAVIER_UNIFORM},
        lost={"test_xavier_normal": "uses torch.nn.init (a copy of its xavier_normal_)"},
        screened="names FunctionType (a function's code or globals)",
    ),
    Sample(
        "scipy-stats-patched",
        "xavier_normal_ writes zeros and the notebook replaces scipy.stats.kstest and "
        "norm.isf so that any distribution would pass in its own process; the checks run in "
        "the grading worker, whose scipy is untouched",
        answers={"xavier": _FANS + _PATCHED_STATS + _XAVIER_UNIFORM},
        lost={"test_xavier_normal": "standard deviation"},
        screened="assigns scipy.stats.kstest",
    ),
]
