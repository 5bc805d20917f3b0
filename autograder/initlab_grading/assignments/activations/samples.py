"""Sample submissions for assignment 3 (activation functions)."""

from initlab_grading.course.samples import Sample

_REFERENCE_ACTIVATIONS = """
def relu(x):
    return torch.clamp(x, min=0)


def relu_grad(x):
    return (x > 0).to(x.dtype)


def sigmoid(x):
    return torch.sigmoid(x)


def sigmoid_grad(x):
    s = torch.sigmoid(x)
    return s * (1 - s)


def tanh(x):
    return torch.tanh(x)


def tanh_grad(x):
    return 1 - torch.tanh(x) ** 2


def swish(x, beta=1.0):
    return x * torch.sigmoid(beta * x)


def swish_grad(x, beta=1.0):
    s = torch.sigmoid(beta * x)
    return s + beta * x * s * (1 - s)


def mish(x):
    return x * torch.tanh(torch.nn.functional.softplus(x))


def mish_grad(x):
    t = torch.tanh(torch.nn.functional.softplus(x))
    return t + x * (1 - t**2) * torch.sigmoid(x)
"""


def _replace(name: str, body: str) -> str:
    """The reference activations with one function replaced."""
    head = f"def {name}("
    start = _REFERENCE_ACTIVATIONS.index(head)
    end = _REFERENCE_ACTIVATIONS.find("\n\n\ndef ", start)
    end = len(_REFERENCE_ACTIVATIONS) if end < 0 else end
    return _REFERENCE_ACTIVATIONS[:start] + body.strip("\n") + _REFERENCE_ACTIVATIONS[end:]


_REFERENCE_LOOP = """
import torch.nn.functional as F


def mlp_forward(X, params, phi):
    h = X
    for k, (W, b) in enumerate(params):
        h = h @ W.T + b
        if k < len(params) - 1:
            h = phi(h)
    return h


def sgd_train(params, batches, forward, lr):
    params = [(W.detach().clone().requires_grad_(True), b.detach().clone().requires_grad_(True))
              for W, b in params]
    losses = []
    for X, y in batches:
        loss = F.cross_entropy(forward(X, params), y)
        for W, b in params:
            W.grad = b.grad = None
        loss.backward()
        with torch.no_grad():
            for W, b in params:
                W -= lr * W.grad
                b -= lr * b.grad
        losses.append(loss.item())
    return losses, [(W.detach(), b.detach()) for W, b in params]
"""


def _loop_with(old: str, new: str) -> str:
    """The reference network and loop with one piece of code replaced."""
    assert _REFERENCE_LOOP.count(old) == 1, old
    return _REFERENCE_LOOP.replace(old, new)


SAMPLES = [
    Sample("reference", "the reference answers: full marks on every test cell"),
    Sample("blank", "the release as handed out: zero on every test cell", blank=True),
    Sample(
        "another-way",
        "correct answers written another way: a five-knot interpolating ReLU net, activations "
        "from hand-written stable exponentials (tanh through the sigmoid), the split by "
        "slicing, the forward pass with addmm and the loop with autograd.grad and a "
        "hand-written log-softmax; must score full marks",
        answers={
            "relu_net": """
knots = np.linspace(0, 1, 5)[:-1]              # hinges at 0, 1/4, 1/2, 3/4
slopes = knots + (knots + 0.25)                # slope of x^2's chord on each piece
W1 = np.ones(4, dtype=np.float32)
b1 = (-knots).astype(np.float32)
W2 = np.diff(np.concatenate([[0.0], slopes])).astype(np.float32)
b2 = np.float32(0)
d_hidden = len(W1)
""",
            "activation_functions": """
def _sig(x):
    e = torch.exp(-torch.abs(x))               # never overflows
    return torch.where(x >= 0, 1 / (1 + e), e / (1 + e))


def relu(x):
    return torch.where(x > 0, x, torch.zeros_like(x))


def relu_grad(x):
    return torch.heaviside(x, torch.ones_like(x))   # slope 1 at the kink


def sigmoid(x):
    return _sig(x)


def sigmoid_grad(x):
    return _sig(x) * _sig(-x)


def tanh(x):
    return 2 * _sig(2 * x) - 1


def tanh_grad(x):
    return 4 * _sig(2 * x) * _sig(-2 * x)


def swish(x, beta=1.0):
    return x * _sig(beta * x)


def swish_grad(x, beta=1.0):
    s = _sig(beta * x)
    return s * (1 + beta * x * _sig(-beta * x))


def _softplus(x):
    return torch.clamp(x, min=0) + torch.log1p(torch.exp(-torch.abs(x)))


def mish(x):
    return x * torch.tanh(_softplus(x))


def mish_grad(x):
    t = torch.tanh(_softplus(x))
    return t + x * (1 - t * t) * _sig(x)
""",
            "split": """
first = np.arange(12_000)
train_idx, val_idx = first[:9_600], first[9_600:]
""",
            "mlp_training": """
def mlp_forward(X, params, phi):
    *hidden, (W_out, b_out) = params
    for W, b in hidden:
        X = phi(torch.addmm(b, X, W.t()))
    return torch.addmm(b_out, X, W_out.t())


def sgd_train(params, batches, forward, lr):
    # gradients through torch.autograd.grad on fresh leaves, a new list of pairs per step
    current = [(W.detach().clone(), b.detach().clone()) for W, b in params]
    losses = []
    for X, y in batches:
        leaves = [t.requires_grad_(True) for pair in current for t in pair]
        logits = forward(X, current)
        log_p = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        loss = -log_p[torch.arange(len(y)), y].sum() / len(y)
        grads = torch.autograd.grad(loss, leaves)
        new = [(t - lr * g).detach() for t, g in zip(leaves, grads)]
        current = [(new[i], new[i + 1]) for i in range(0, len(new), 2)]
        losses.append(float(loss.detach()))
    return losses, current
""",
        },
    ),
    Sample(
        "relu-net-too-coarse",
        "a ReLU net interpolating x^2 at 0, 1/2, 1: exact at the ends, error 1/16 in between",
        answers={
            "relu_net": "d_hidden = 2\nW1 = np.array([1.0, 1.0])\nb1 = np.array([0.0, -0.5])\n"
            "W2 = np.array([0.5, 1.0])\nb2 = 0.0",
        },
        lost={"test_relu_net": "here 0.062500 on a piece of width 0.5"},
    ),
    Sample(
        "relu-net-bias-sign",
        "the seed's slopes and kinks with biases +a*beta instead of -a*beta",
        answers={
            "relu_net": "d_hidden = 3\nW1 = np.array([0.2, 0.6, 0.8])\n"
            "b1 = np.array([0.0, 0.12, 0.48])\nW2 = np.array([1.0, 1.0, 1.0])\nb2 = 0.0",
        },
        # the hidden check runs before the visible one, so its hint reaches the student
        lost={"test_relu_net": "With the signs of b1 flipped the net would pass"},
    ),
    Sample(
        "tanh-grad-unsquared",
        "tanh's slope written 1 - tanh(x) instead of 1 - tanh(x)**2",
        answers={
            "activation_functions": _replace(
                "tanh_grad", "def tanh_grad(x):\n    return 1 - torch.tanh(x)"
            )
        },
        # the wrong formula is finite at large |x|: it costs test_derivatives only
        lost={"test_derivatives": "slope is 1 - tanh(x)**2"},
    ),
    Sample(
        "sigmoid-grad-is-sigma",
        "sigmoid's slope written as sigma(x) itself (right at no x; at 0 it gives 0.5, not 0.25)",
        answers={
            "activation_functions": _replace(
                "sigmoid_grad", "def sigmoid_grad(x):\n    return torch.sigmoid(x)"
            )
        },
        lost={"test_derivatives": "That is sigma(x) itself"},
    ),
    Sample(
        "swish-grad-overflow",
        "swish's slope in the course material's form with exp(-beta x): inf / inf = nan for "
        "large negative x",
        answers={
            "activation_functions": _replace(
                "swish_grad",
                """def swish_grad(x, beta=1.0):
    e = torch.exp(-beta * x)
    return (1 + e + x * beta * e) / (1 + e) ** 2""",
            )
        },
        lost={"test_large_inputs": "it must be finite for every x"},
    ),
    Sample(
        "mish-naive-softplus",
        "mish with softplus written as the formula reads, log(1 + exp(x)): right in absolute "
        "terms, but for negative x 1 + exp(x) rounds exp(x) away (in float32 mish is 0 below "
        "about -17); it costs test_activation_values only",
        answers={
            "activation_functions": _replace(
                "mish", "def mish(x):\n    return x * torch.tanh(torch.log(1 + torch.exp(x)))"
            )
        },
        lost={"test_activation_values": "softplus is computed as log(1 + exp(x))"},
    ),
    Sample(
        "autograd-inside",
        "mish's slope taken from autograd (switched back on with torch.enable_grad inside) "
        "instead of written by hand; it costs test_derivatives only",
        answers={
            "activation_functions": _replace(
                "mish_grad",
                """def mish_grad(x):
    with torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(mish(x).sum(), x)
    return g""",
            )
        },
        lost={"test_derivatives": "Your mish_grad uses torch.enable_grad"},
    ),
    Sample(
        "split-shuffled",
        "a random 80/20 split of the first 12,000 images instead of the last 20 % as validation",
        answers={
            "split": "perm = np.random.default_rng(0).permutation(12_000)\n"
            "train_idx, val_idx = perm[:9_600], perm[9_600:]",
        },
        lost={"test_split": "like a random sample"},
    ),
    Sample(
        "split-first-fifth",
        "validation taken from the first 20 % of the 12,000 images instead of the last",
        answers={"split": "val_idx = np.arange(2_400)\ntrain_idx = np.arange(2_400, 12_000)"},
        lost={"test_split": "it is the first 2,400"},
    ),
    Sample(
        "split-end-of-training-set",
        "validation taken from the end of all 60,000 training images",
        answers={"split": "train_idx = np.arange(9_600)\nval_idx = np.arange(57_600, 60_000)"},
        lost={"test_split": "only the first 12,000 training images are used"},
    ),
    Sample(
        "loop-sum-loss",
        "the training loop minimises the cross-entropy summed over the batch "
        "(reduction='sum'): every step 16 times too large",
        answers={
            "mlp_training": _loop_with(
                "F.cross_entropy(forward(X, params), y)",
                "F.cross_entropy(forward(X, params), y, reduction='sum')",
            )
        },
        lost={"test_sgd_train": "summed over each batch"},
    ),
    Sample(
        "loop-grads-accumulate",
        "the training loop never clears the gradients: each step adds the earlier ones",
        answers={
            "mlp_training": _loop_with("            W.grad = b.grad = None\n", "            pass\n")
        },
        lost={"test_sgd_train": "gradients add up from step to step"},
    ),
    Sample(
        "forward-phi-on-logits",
        "the forward pass applies the activation to the output layer too; the training loop "
        "is right, so only the forward test loses its point",
        answers={
            "mlp_training": _loop_with(
                "        if k < len(params) - 1:\n            h = phi(h)",
                "        h = phi(h)",
            )
        },
        lost={"test_mlp_forward": "applied to the output layer too"},
    ),
    Sample(
        "relu-grad-bool",
        "relu_grad returns the boolean x > 0: right values, wrong dtype, charged once",
        answers={
            "activation_functions": _replace("relu_grad", "def relu_grad(x):\n    return x > 0")
        },
        lost={"test_derivatives": "keep the input's dtype"},
    ),
]
