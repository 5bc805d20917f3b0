"""initlab.simulation: the blocked, batched simulation of random deep networks equals the
plain one-network-at-a-time computation within a round-off bound computed alongside."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from initlab.checks import unit_roundoff
from initlab.simulation import layer_output_variances, layer_output_variances_one_by_one, orthogonal

WIDTH = 6


def he_init(width: int):
    return lambda n: torch.randn(n, width, width) * math.sqrt(2 / width)


he = he_init(WIDTH)


def exact_with_bound(X, num_nets, depth, dtype, seed, width=WIDTH, base=None):
    """Variances in float64 (the 'exact' values, their own error being far below the
    float32 bound) and, per network and layer, a bound on how far a ``dtype`` computation
    in any summation order can be from them.

    Forward: a dot product of K terms has error <= gamma_K * sum |w||x| with
    gamma_K = K u / (1 - K u). The sparse first layer computes g.x as
    fl(c + sum g_j fl(x_j - b_j)) over the entries off the base b, with c = fl(g.b):
    its error is at most gamma_(K+1) (|c| + sum |g||x - b|) + u sum |g||x - b| +
    gamma_d sum |g||b| <= gamma_(2d+1) sum |g| (|x| + 2|b|) (gamma_a + gamma_b +
    gamma_a gamma_b <= gamma_(a+b)), which covers the dense product too. ReLU is
    1-Lipschitz, so absolute error bounds E propagate as E' = |W| E + gamma_K |W| relu(h).
    Variance: var(y + e) - var(y) =
    (2 sum (y - ybar)(e - ebar) + sum (e - ebar)^2) / (N - 1), with |e - ebar| <= 2 max E;
    computing the variance itself (any of the usual algorithms) adds at most
    gamma_{N+4} * sum y^2 / (N - 1) (Higham, ch. 1.9 and 4).
    """
    u = unit_roundoff(np.float32 if dtype == torch.float32 else np.float64)

    def gamma(k: int) -> float:
        return k * u / (1 - k * u)

    torch.manual_seed(seed)
    Ws = [he_init(width)(num_nets).double() for _ in range(depth)]
    d = X.shape[1]
    first = (torch.randn(num_nets * width, d) / math.sqrt(d)).double().view(num_nets, width, d)
    Xd = X.double()
    N = len(X)
    exact = torch.empty(depth, num_nets, dtype=torch.float64)
    bound = torch.empty_like(exact)
    for i in range(num_nets):
        H = Xd @ first[i].T
        if base is None:
            E = gamma(d + 1) * (Xd.abs() @ first[i].abs().T)  # +1: rounding X to dtype
        else:
            E = gamma(2 * d + 2) * ((Xd.abs() + 2 * base.double().abs()) @ first[i].abs().T)
        for layer in range(depth):
            A = torch.relu(H)
            W = Ws[layer][i]
            H = A @ W.T
            E = E @ W.abs().T + gamma(width + 1) * (A @ W.abs().T)
            y, e = H[:, 0], E[:, 0]
            spread = 2 * e.max()
            exact[layer, i] = y.var()
            bound[layer, i] = (2 * (y - y.mean()).abs().sum() * spread + N * spread**2) / (
                N - 1
            ) + gamma(N + 4) * (y**2).sum() / (N - 1)
    return exact, bound


def background_data(num_inputs, d, density, at="min", seed=0):
    """Inputs like normalised images: each column sits at its own background value (its
    minimum, or with ``at="max"`` its maximum) except for about ``density`` of the
    entries; returns X and the backgrounds."""
    g = torch.Generator().manual_seed(seed)
    base = -0.5 - torch.rand(d, generator=g)
    off = torch.rand(num_inputs, d, generator=g) < density
    step = 0.1 + torch.rand(num_inputs, d, generator=g)
    return base + torch.where(off, step if at == "min" else -step, 0.0), base


@pytest.fixture
def sparse_calls(monkeypatch):
    """The dtypes of the sparse first layers that runs asked for, in order."""
    from initlab import _simulation as simulation

    calls = []
    real = simulation._sparse_first_layer

    def spy(dtype):
        calls.append(dtype)
        return real(dtype)

    monkeypatch.setattr(simulation, "_sparse_first_layer", spy)
    return calls


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("method", ["bmm", "fused"])
@pytest.mark.parametrize("width", [6, 10])  # 10: the lab's width
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_equals_exact_within_roundoff(dtype, width, method, one_thread):
    g = torch.Generator().manual_seed(1)
    X = torch.rand(700, 40, generator=g)
    depth, num_nets = 12, 7
    exact, bound = exact_with_bound(X, num_nets, depth, dtype, seed=3, width=width)
    torch.manual_seed(3)
    got = layer_output_variances(
        X,
        he_init(width),
        depth=depth,
        num_nets=num_nets,
        image_block=128,
        dtype=dtype,
        method=method,
    )
    assert got.shape == (depth, num_nets)
    assert ((got - exact).abs() <= bound).all(), float(((got - exact).abs() / bound).max())
    for layout in ("rows", "columns"):
        torch.manual_seed(3)
        plain = layer_output_variances_one_by_one(
            X, he_init(width), depth=depth, num_nets=num_nets, dtype=dtype, layout=layout
        )
        assert ((plain - exact).abs() <= bound).all(), layout


@pytest.mark.parametrize("method", ["bmm", "fused"])
def test_inputs_zero_in_every_row_are_left_out_exactly(method, one_thread):
    """Columns of X that are zero everywhere (MNIST's border) are dropped from the first
    layer's products; the weights drawn and the variances stay those of the full product
    (within its round-off bound), and a column zero in all but one row is kept."""
    g = torch.Generator().manual_seed(6)
    X = torch.rand(500, 40, generator=g)
    X[:, ::3] = 0
    X[17, 3] = 0.5  # zero in all rows but one: used
    exact, bound = exact_with_bound(X, 5, 8, torch.float32, seed=9, width=10)
    torch.manual_seed(9)
    got = layer_output_variances(
        X, he_init(10), depth=8, num_nets=5, image_block=128, method=method
    )
    assert ((got - exact).abs() <= bound).all(), float(((got - exact).abs() / bound).max())
    X[17, 3] = 0
    torch.manual_seed(9)
    without = layer_output_variances(
        X, he_init(10), depth=8, num_nets=5, image_block=128, method=method
    )
    assert not torch.equal(without, got)


@pytest.mark.parametrize("at", ["min", "max"])
@pytest.mark.parametrize("method", ["bmm", "fused"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sparse_first_layer_equals_exact_within_roundoff(
    dtype, method, at, sparse_calls, one_thread
):
    """The first layer over the entries off each column's background (the most common of
    its minimum and maximum) plus the background's product gives the variances of the
    dense product within the bound of that computation. 7 networks of width 10 make 70
    outputs per input, not a whole number of vectors (zero-padded); 700 inputs in blocks
    of 128 end with a short block."""
    X, base = background_data(700, 40, 0.2, at=at)
    exact, bound = exact_with_bound(X, 7, 10, dtype, seed=3, width=10, base=base)
    torch.manual_seed(3)
    got = layer_output_variances(
        X,
        he_init(10),
        depth=10,
        num_nets=7,
        image_block=128,
        dtype=dtype,
        method=method,
        first_layer="sparse",
    )
    assert sparse_calls == [dtype]
    assert ((got - exact).abs() <= bound).all(), float(((got - exact).abs() / bound).max())


def test_auto_takes_the_sparse_first_layer_with_the_fused_kernel_on_sparse_inputs(
    sparse_calls,
):
    """``first_layer="auto"`` goes sparse only where the fused kernel runs (its compile
    time already paid) and at most SPARSE_MAX_DENSITY of the entries are off their
    column's background; ``"sparse"`` and ``"dense"`` are obeyed."""
    from initlab.simulation import SPARSE_MAX_DENSITY

    sparse, _ = background_data(300, 20, 0.2)
    dense, _ = background_data(300, 20, min(1.0, SPARSE_MAX_DENSITY + 0.2))
    kwargs = dict(depth=3, num_nets=2)
    layer_output_variances(sparse, he, method="fused", **kwargs)
    assert sparse_calls == [torch.float32]
    layer_output_variances(sparse, he, method="bmm", **kwargs)
    layer_output_variances(sparse, he, method="fused", first_layer="dense", **kwargs)
    layer_output_variances(dense, he, method="fused", **kwargs)
    assert sparse_calls == [torch.float32]
    layer_output_variances(dense, he, method="bmm", first_layer="sparse", **kwargs)
    assert sparse_calls == [torch.float32] * 2


@pytest.mark.parametrize(
    ("vectors", "dtype"),
    [((256, 16), torch.float32), ((128, 32), torch.float64), ((128, 16), torch.float32)],
)
def test_the_sparse_first_layer_for_other_cpus_is_correct(vectors, dtype, monkeypatch, one_thread):
    """The sparse first layer's passes follow the host's vectors too (8, 2 and 4 lanes
    here); every blocking gives the variances within the round-off bound."""
    from initlab import _simulation as simulation

    monkeypatch.setattr(simulation, "_host_vectors", lambda: vectors)
    X, base = background_data(301, 30, 0.3, seed=5)
    exact, bound = exact_with_bound(X, 3, 6, dtype, seed=12, width=7, base=base)
    torch.manual_seed(12)
    got = layer_output_variances(
        X, he_init(7), depth=6, num_nets=3, image_block=100, dtype=dtype, first_layer="sparse"
    )
    assert ((got - exact).abs() <= bound).all(), float(((got - exact).abs() / bound).max())


@pytest.mark.parametrize(
    ("vectors", "width", "dtype"),
    [
        ((256, 16), 10, torch.float32),  # AVX2: two image vectors, groups of 6, inputs re-read
        ((128, 32), 16, torch.float64),  # NEON: the widest layers, two lanes of doubles
        ((128, 16), 6, torch.float32),  # SSE
    ],
)
def test_the_fused_kernel_blocked_for_other_cpus_is_correct(
    vectors, width, dtype, monkeypatch, one_thread
):
    """The kernel's blocking follows the host's vector registers; the blockings of other
    CPUs compile here too (LLVM splits or joins the vectors) and must give the same
    variances within the round-off bound. An input count that is not a multiple of the
    block (zero-padded columns) is included."""
    from initlab import _simulation as simulation

    monkeypatch.setattr(simulation, "_host_vectors", lambda: vectors)
    X = torch.rand(301, 30, generator=torch.Generator().manual_seed(11))
    exact, bound = exact_with_bound(X, 3, 6, dtype, seed=12, width=width)
    torch.manual_seed(12)
    got = layer_output_variances(
        X, he_init(width), depth=6, num_nets=3, image_block=100, dtype=dtype, method="fused"
    )
    assert ((got - exact).abs() <= bound).all(), float(((got - exact).abs() / bound).max())


@pytest.mark.parametrize("first_layer", ["dense", "sparse"])
@pytest.mark.parametrize("method", ["bmm", "fused"])
def test_chunks_of_networks_are_separate_runs(method, first_layer, one_thread):
    """A chunk runs exactly the operations of a run with that many networks, so the
    results are bitwise equal (one thread, same generator state)."""
    X = background_data(300, 20, 0.2, seed=2)[0]
    kwargs = dict(depth=4, image_block=64, method=method, first_layer=first_layer)
    torch.manual_seed(5)
    got = layer_output_variances(X, he, num_nets=12, net_chunk=5, **kwargs)
    torch.manual_seed(5)
    parts = [layer_output_variances(X, he, num_nets=n, **kwargs) for n in (5, 5, 2)]
    assert torch.equal(got, torch.cat(parts, dim=1))


@pytest.mark.parametrize("first_layer", ["dense", "sparse"])
@pytest.mark.parametrize("method", ["bmm", "fused"])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_the_number_of_worker_threads_changes_nothing(workers, method, first_layer):
    """Weights are drawn in the calling thread, chunk by chunk, and each chunk runs
    single-threaded kernels, so results are bitwise equal whatever ``workers`` is."""
    X = background_data(300, 20, 0.2, seed=4)[0]
    kwargs = dict(
        depth=5,
        num_nets=23,
        net_chunk=4,
        image_block=64,
        method=method,
        first_layer=first_layer,
    )
    torch.manual_seed(8)
    one = layer_output_variances(X, he, workers=1, **kwargs)
    torch.manual_seed(8)
    assert torch.equal(layer_output_variances(X, he, workers=workers, **kwargs), one)


def test_auto_compiles_only_for_large_runs(monkeypatch):
    """``method="auto"`` keeps small runs (the grade budget) on torch.bmm and takes the
    fused kernel from FUSED_MIN_PASSES passes; too wide layers stay on bmm."""
    from initlab import _simulation as simulation

    picked = []
    real = simulation._fused_kernel

    def spy(width, dtype):
        picked.append(width)
        return real(width, dtype)

    monkeypatch.setattr(simulation, "_fused_kernel", spy)
    X = torch.rand(50, 8, generator=torch.Generator().manual_seed(1))
    layer_output_variances(X, he, depth=3, num_nets=2)
    assert picked == []
    monkeypatch.setattr(simulation, "FUSED_MIN_PASSES", 50 * 3 * 2)
    layer_output_variances(X, he, depth=3, num_nets=2)
    assert picked == [WIDTH]
    wide = lambda n: torch.randn(n, 17, 17) / 17  # noqa: E731
    layer_output_variances(X, wide, depth=3, num_nets=2)
    assert picked == [WIDTH]


def test_bad_init_shape_is_named():
    with pytest.raises(ValueError, match=r"init\(n\) must return n square weight matrices"):
        layer_output_variances(
            torch.rand(10, 5), lambda n: torch.randn(n, 3, 4), depth=2, num_nets=2
        )
    with pytest.raises(ValueError, match="X must be"):
        layer_output_variances(torch.rand(10), he, depth=2, num_nets=2)
    with pytest.raises(ValueError, match="method must be 'auto', 'fused' or 'bmm'"):
        layer_output_variances(torch.rand(10, 5), he, depth=2, num_nets=2, method="numba")
    with pytest.raises(ValueError, match="first_layer must be 'auto', 'dense' or 'sparse'"):
        layer_output_variances(torch.rand(10, 5), he, depth=2, num_nets=2, first_layer="csr")
    with pytest.raises(ValueError, match="layout must be 'rows' or 'columns'"):
        layer_output_variances_one_by_one(
            torch.rand(10, 5), he, depth=2, num_nets=2, layout="diagonal"
        )
    wide = lambda n: torch.randn(n, 17, 17)  # noqa: E731
    with pytest.raises(ValueError, match="up to width 16; got width 17.*use method='bmm'"):
        layer_output_variances(torch.rand(10, 5), wide, depth=2, num_nets=2, method="fused")


@pytest.mark.parametrize(("rows", "cols"), [(10, 10), (10, 784), (7, 3)])
def test_orthogonal_is_torchs_orthogonal_init_with_its_gain(rows, cols):
    """One matrix from the same generator state is torch.nn.init.orthogonal_'s (same normal draws,
    same QR and sign fix); a batch has orthonormal rows (or columns) of norm ``gain``."""
    gain = math.sqrt(2)
    torch.manual_seed(4)
    ours = orthogonal(1, rows, cols, gain=gain)
    torch.manual_seed(4)
    ref = torch.nn.init.orthogonal_(torch.empty(rows, cols), gain=gain)
    assert ours.shape == (1, rows, cols)
    assert torch.allclose(ours[0], ref, atol=1e-5), float((ours[0] - ref).abs().max())
    batch = orthogonal(5, rows, cols, gain=gain, generator=torch.Generator().manual_seed(1))
    gram = batch @ batch.transpose(1, 2) if rows <= cols else batch.transpose(1, 2) @ batch
    eye = torch.eye(min(rows, cols)).expand_as(gram)
    assert torch.allclose(gram, gain**2 * eye, atol=1e-4)
    assert not torch.allclose(batch[0], batch[1])


@pytest.mark.parametrize("method", ["bmm", "fused"])
@pytest.mark.parametrize("first_layer", ["dense", "sparse"])
def test_first_init_draws_the_first_layer_as_plain_torch_does(method, first_layer, one_thread):
    """Orthogonal layers with gain sqrt(2), the first one included (the lab's Figure 2): the
    batched run equals a plain float64 loop over networks with torch's own orthogonal_, fed the
    same generator states (the weights are drawn layer by layer, then the first layer)."""
    X, _ = background_data(300, 20, 0.3, seed=3)
    width, depth, num_nets, gain = 6, 5, 3, math.sqrt(2)
    init = lambda n: orthogonal(n, width, width, gain=gain)  # noqa: E731
    first_init = lambda n: orthogonal(n, width, X.shape[1], gain=gain)  # noqa: E731
    torch.manual_seed(7)
    got = layer_output_variances(
        X, init, depth=depth, num_nets=num_nets, dtype=torch.float64, method=method,
        first_layer=first_layer, first_init=first_init, image_block=64,
    )
    torch.manual_seed(7)
    Ws = [init(num_nets) for _ in range(depth)]
    G = first_init(num_nets)
    for i in range(num_nets):
        H = X.double() @ G[i].double().T
        for layer in range(depth):
            H = torch.relu(H) @ Ws[layer][i].double().T
            want = H[:, 0].var()
            assert abs(float(got[layer, i]) - float(want)) <= 1e-9 * float(want), (layer, i)


@pytest.mark.parametrize("method", ["bmm", "fused"])
def test_zero_with_its_deterministic_first_layer(method, one_thread):
    """ZerO's first layer (the partial identity, torch.nn.init.eye_) and identity layers: every
    network computes relu(x_1) at every layer, so all networks and layers give var(relu(x_1));
    inputs whose first ``width`` entries are constant give exactly 0 (MNIST's top-left pixels)."""
    width, d = 10, 40
    X = torch.rand(400, d, generator=torch.Generator().manual_seed(2)) - 0.5
    eye = lambda n: torch.eye(width).expand(n, width, width)  # noqa: E731
    first = lambda n: torch.nn.init.eye_(torch.empty(width, d)).expand(n, width, d)  # noqa: E731
    kwargs = dict(depth=6, num_nets=5, method=method, first_init=first)
    got = layer_output_variances(X, eye, **kwargs)
    want = float(torch.relu(X[:, 0].double()).var())
    assert torch.equal(got, got[:1, :1].expand_as(got))
    assert abs(float(got[0, 0]) - want) <= 1e-5 * want
    X[:, :width] = -0.42
    assert (layer_output_variances(X, eye, **kwargs) == 0).all()


def test_bad_first_init_shape_is_named():
    with pytest.raises(ValueError, match=r"first_init\(n\) must return n first layers of shape"):
        layer_output_variances(
            torch.rand(10, 5),
            he,
            depth=2,
            num_nets=2,
            first_init=lambda n: torch.randn(n, 5, WIDTH),
        )
