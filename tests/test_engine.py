"""The batched training engine: batched equals alone, the hand-written backward pass
equals autograd, the cache, the progress bar, CPU/CUDA selection."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch

from initlab import _batched, engine
from initlab.engine import Config


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Outputs are compared bit for bit: fix the thread count (a different count may
    split sums differently) and keep the runs' budget off ``grade``-only paths."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for var in ("INITLAB_BUDGET", "NBGRADER_EXECUTION", "CI"):
        monkeypatch.delenv(var, raising=False)
    yield
    torch.set_num_threads(threads)


def _data(n, dim=784, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, dim, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return X, y


CONFIGS = [
    Config(act, lr, seed) for act in engine.ACTIVATIONS for lr in (0.05, 0.5) for seed in (0, 7)
] + [Config("swish", 0.2, 3, beta=1.5, learn_beta=True)]


def test_batched_training_equals_training_each_alone():
    """Each configuration owns its generator and its slice of every stacked tensor, and
    the CPU kernels compute each slice with the same operations whatever the stack
    size, so the results agree bit for bit (with the thread count fixed)."""
    train, val = _data(300), _data(100, seed=1)
    kwargs = dict(num_epochs=2, batch_size=64, cache=False, progress=False)  # 300 = 4*64 + 44
    mixed = engine.train(CONFIGS[::-1], train, val, **kwargs)[::-1]
    for config, together in zip(CONFIGS, mixed, strict=True):
        (alone,) = engine.train([config], train, val, **kwargs)
        assert together.config == config
        for key in engine.HISTORY_KEYS:
            np.testing.assert_array_equal(together.history[key], alone.history[key])
        for key in alone.params:
            np.testing.assert_array_equal(together.params[key], alone.params[key])


def _autograd_step(config, X, y, params, betas):
    """One plain SGD step of the same network with autograd, in float64."""
    Ws = [torch.tensor(params[f"W{k}"], dtype=torch.float64, requires_grad=True) for k in (1, 2, 3)]
    bs = [torch.tensor(params[f"b{k}"], dtype=torch.float64, requires_grad=True) for k in (1, 2, 3)]
    bt = [torch.tensor(b, dtype=torch.float64, requires_grad=True) for b in betas]
    h = X.double()
    for k in range(3):
        h = h @ Ws[k].T + bs[k]
        if k < 2:
            h = engine.activation_fn(config.activation, h, bt[k])
    loss = torch.nn.functional.cross_entropy(h, y)
    loss.backward()
    out = {f"W{k + 1}": (Ws[k] - config.lr * Ws[k].grad).detach().numpy() for k in range(3)}
    out |= {f"b{k + 1}": (bs[k] - config.lr * bs[k].grad).detach().numpy() for k in range(3)}
    if config.learn_beta:
        out["beta"] = np.array([float((b - config.lr * b.grad).detach()) for b in bt])
    return out


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("threads", [1, 2])
def test_results_do_not_depend_on_workers_or_threads(workers, threads):
    """Every network is computed by single-threaded kernels on one worker thread, so
    neither the number of worker threads nor torch's thread count changes a bit."""
    train, val = _data(300), _data(100, seed=1)
    kwargs = dict(num_epochs=1, batch_size=64, cache=False, progress=False)
    reference = engine.train(CONFIGS, train, val, workers=1, **kwargs)
    torch.set_num_threads(threads)
    other = engine.train(CONFIGS, train, val, workers=workers, **kwargs)
    assert torch.get_num_threads() == threads, "train() must restore torch's thread count"
    for a, b in zip(reference, other, strict=True):
        for key in engine.HISTORY_KEYS:
            np.testing.assert_array_equal(a.history[key], b.history[key])
        for key in a.params:
            np.testing.assert_array_equal(a.params[key], b.params[key])


@pytest.mark.parametrize(
    "counts", [(8, 8, 8, 8, 8, 8), (1, 1, 1, 1, 1, 1), (5, 5, 1), (3,), (2, 7, 4, 1, 1)]
)
@pytest.mark.parametrize("parts", [1, 2, 3, 4])
def test_parts_get_an_equal_share_of_every_activation(counts, parts):
    """Every network lands in exactly one part, each part keeps the activation order (one
    contiguous slice per activation), every activation's networks are split as evenly as
    they can be, and no part holds more than one network above another."""
    names = [a for a, k in zip(engine.ACTIVATIONS, counts, strict=False) for _ in range(k)]
    members = _batched._share_out(names, parts)
    assert sorted(i for m in members for i in m) == list(range(len(names)))
    assert all(m == sorted(m) for m in members) and all(members)
    sizes = [len(m) for m in members]
    assert max(sizes) - min(sizes) <= 1
    assert len(members) == min(parts, len(names))
    for a in set(names):
        shares = [sum(names[i] == a for i in m) for m in members]
        assert max(shares) - min(shares) <= 1, (a, shares)


@pytest.mark.parametrize("workers", [1, 2])
def test_networks_sharing_a_seed_share_their_batch_and_still_equal_training_alone(workers):
    """A part whose networks all have one seed passes one batch, broadcast, to all of them
    (no gather per network); each still equals itself trained alone."""
    configs = [Config(act, lr, 3) for act in ("relu", "mish", "swish") for lr in (0.05, 0.5)]
    train, val = _data(200), _data(50, seed=1)
    kwargs = dict(num_epochs=2, batch_size=64, cache=False, progress=False)
    together = engine.train(configs, train, val, workers=workers, **kwargs)
    for config, result in zip(configs, together, strict=True):
        (alone,) = engine.train([config], train, val, **kwargs)
        for key in engine.HISTORY_KEYS:
            np.testing.assert_array_equal(result.history[key], alone.history[key])
        for key in alone.params:
            np.testing.assert_array_equal(result.params[key], alone.params[key])


def test_same_seed_means_same_batches_whatever_the_initialization():
    """The batch order has a generator of its own: an init_fn that draws more random
    numbers for one label than for another does not change which batches either sees."""

    def init_fn(config, layer_sizes, generator):
        if config.init == "draws-more":
            torch.rand(1000, generator=generator)
        W = torch.linspace(-0.1, 0.1, layer_sizes[1] * layer_sizes[0]).view(layer_sizes[1], -1)
        return [(W, torch.zeros(layer_sizes[1]))]

    configs = [Config("relu", 0.1, 5, init=label) for label in ("draws-more", "draws-less")]
    a, b = engine.train(
        configs,
        _deep_data(100),
        num_epochs=2,
        batch_size=16,
        layer_sizes=(20, 10),
        init_fn=init_fn,
        cache=False,
        progress=False,
    )
    np.testing.assert_array_equal(a.params["W1"], b.params["W1"])
    np.testing.assert_array_equal(a.history["train_loss"], b.history["train_loss"])
    perm = torch.randperm(100, generator=engine.batch_generator(5))
    assert not torch.equal(perm, torch.randperm(100, generator=torch.Generator().manual_seed(5)))


def test_an_unwritable_cache_is_reported_on_stdout_and_training_goes_on(tmp_path, capfd):
    not_a_folder = tmp_path / "runs"
    not_a_folder.write_text("a file where the cache folder should be")
    (result,) = engine.train(
        CONFIGS[:1], _data(64), num_epochs=1, cache_dir=not_a_folder, progress=False
    )
    out, err = capfd.readouterr()
    assert np.isfinite(result.history["train_loss"]).all()
    assert "could not cache a result" in out and "INITLAB_DATA" in out and err == ""


def test_hand_written_backward_equals_autograd():
    """One full-batch step in float64 against autograd: the difference is round-off
    (a few hundred operations per entry, u = 1.1e-16), far below 1e-12."""
    X, y = _data(32, dim=20)
    sizes = (20, 16, 8, 10)
    start = engine.train(
        CONFIGS, (X, y), num_epochs=0, layer_sizes=sizes, cache=False, dtype=torch.float64
    )
    one = engine.train(
        CONFIGS,
        (X, y),
        num_epochs=1,
        batch_size=32,
        layer_sizes=sizes,
        cache=False,
        dtype=torch.float64,
        progress=False,
    )
    for config, before, after in zip(CONFIGS, start, one, strict=True):
        betas = before.params.get("beta", [config.beta, config.beta])
        want = _autograd_step(config, X, y, before.params, betas)
        for key, value in want.items():
            np.testing.assert_allclose(
                after.params[key], value, rtol=0, atol=1e-12, err_msg=f"{config} {key}"
            )


def test_training_learns_a_learnable_problem():
    X, y = _data(512, dim=784)
    for k in range(10):  # class k lights up pixels 10k .. 10k + 9
        X[y == k, 10 * k : 10 * k + 10] += 2.0
    (result,) = engine.train(
        [Config("relu", 0.05, 0)], (X, y), (X, y), num_epochs=15, batch_size=32, cache=False
    )
    assert result.history["train_loss"][-1] < 0.7 * result.history["train_loss"][0]
    assert result.history["val_acc"][-1] > 0.9
    assert engine.evaluate(result, X, y)["acc"] == pytest.approx(result.history["val_acc"][-1])


def test_results_are_cached_and_a_code_change_retrains(tmp_path, monkeypatch):
    train = _data(128)
    kwargs = dict(num_epochs=1, batch_size=64, cache_dir=tmp_path, progress=False)
    first = engine.train(CONFIGS[:3], train, **kwargs)
    assert not any(r.cached for r in first) and len(list(tmp_path.iterdir())) == 3

    def no_training(*args, **kwargs):
        raise AssertionError("trained although every result is cached")

    with monkeypatch.context() as m:
        m.setattr(engine, "_train_stack", no_training)
        again = engine.train(CONFIGS[:3], train, **kwargs)
    assert all(r.cached for r in again)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.params["W1"], b.params["W1"])
        np.testing.assert_array_equal(a.history["train_loss"], b.history["train_loss"])
    # a new configuration trains alone; other data or another code version retrain
    mixed = engine.train(CONFIGS[:4], train, **kwargs)
    assert [r.cached for r in mixed] == [True, True, True, False]
    assert not any(r.cached for r in engine.train(CONFIGS[:1], _data(128, seed=5), **kwargs))
    # another numerical code path (here another MKL branch) rounds differently: train again
    with monkeypatch.context() as m:
        m.setenv("MKL_CBWR", os.environ.get("MKL_CBWR", "") + "-another-branch")
        assert not any(r.cached for r in engine.train(CONFIGS[:1], train, **kwargs))
    monkeypatch.setattr(engine, "code_version", lambda: "another version of the engine")
    assert not any(r.cached for r in engine.train(CONFIGS[:1], train, **kwargs))


def test_progress_bar_writes_to_stdout_and_never_to_stderr(capfd, monkeypatch):
    train = _data(64)
    engine.train(CONFIGS[:2], train, num_epochs=2, cache=False, progress=True)
    out, err = capfd.readouterr()
    assert "2/2 epochs" in out and err == ""
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")  # the grade budget: no bar
    engine.train(CONFIGS[:2], train, num_epochs=1, cache=False)
    assert capfd.readouterr() == ("", "")


def test_progress_bar_is_off_where_initlab_progress_is_0(capfd, monkeypatch):
    """The course's build and nbval run solutions/ at the default budget without the bar,
    so their outputs do not depend on whether training came from the cache."""
    train = _data(64)
    monkeypatch.setenv("INITLAB_BUDGET", "default")
    engine.train(CONFIGS[:1], train, num_epochs=1, cache=False)
    assert "1/1 epochs" in capfd.readouterr().out
    monkeypatch.setenv(engine.PROGRESS_VARIABLE, "0")
    engine.train(CONFIGS[:1], train, num_epochs=1, cache=False)
    assert capfd.readouterr() == ("", "")


def test_progress_bar_with_parts_on_threads_reaches_the_end(capfd):
    """With two workers the parts train on threads of their own; the bar (drawn by the
    calling thread) counts the slowest part and ends at the total."""
    train = _data(64)
    engine.train(CONFIGS[:4], train, num_epochs=3, workers=2, cache=False, progress=True)
    engine.train(
        CONFIGS[:4], train, num_steps=5, log_every=2, workers=2, cache=False, progress=True
    )
    out, err = capfd.readouterr()
    assert "3/3 epochs" in out and "5/5 steps" in out and err == ""


def test_an_error_in_one_part_stops_the_others_and_is_raised(monkeypatch):
    """The part that fails (the second) raises its own error, not the first part's stop, and the
    other part stops at its next step instead of training on."""
    calls = {}
    step = _batched._Stack.step

    def failing_step(self, X, y):
        part = self.configs[0].label()
        calls[part] = calls.get(part, 0) + 1
        if self.configs[0] == CONFIGS[1] and calls[part] == 3:
            raise RuntimeError("the second part broke")
        return step(self, X, y)

    monkeypatch.setattr(_batched._Stack, "step", failing_step)
    steps = 10**6  # far more than the other part gets through before it is stopped
    with pytest.raises(RuntimeError, match="the second part broke"):
        engine.train(
            CONFIGS[:2],
            _data(64, dim=20),
            num_steps=steps,
            layer_sizes=(20, 10),
            workers=2,
            cache=False,
            progress=False,
        )
    assert len(calls) == 2 and max(calls.values()) < steps


def test_progress_bar_redraws_grow_logarithmically_with_the_run(monkeypatch):
    """An hour-long cell executed by nbconvert keeps every redraw: one per 0.5 s would be
    7,200 lines; the bar redraws at most every 0.02 x elapsed, ~290 times in an hour."""
    clock = [0.0]
    monkeypatch.setattr(engine.time, "perf_counter", lambda: clock[0])
    stream = io.StringIO()
    bar = engine.Progress(36_000, "training", True, stream=stream, unit="steps")
    for step in range(1, 36_001):  # one step every 0.1 s for an hour
        clock[0] = step * 0.1
        bar.update(step)
    redraws = stream.getvalue().count("\r")
    assert 150 < redraws < 400, redraws
    assert stream.getvalue().endswith("36000/36000 steps, 3600 s elapsed, ~0 s left \n")


def test_device_selection(monkeypatch):
    """A device that is asked for is taken as given; otherwise CUDA exactly when torch
    reports it (simulated both ways: CI has no GPU)."""
    assert engine.pick_device("cpu") == torch.device("cpu")
    assert engine.pick_device(torch.device("cuda", 1)) == torch.device("cuda", 1)
    for available, want in ((True, "cuda"), (False, "cpu")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda a=available: a)
        assert engine.pick_device().type == want


def test_bad_input_says_what_is_expected():
    with pytest.raises(ValueError, match=r"X of shape \(N, 784\)"):
        engine.train(CONFIGS[:1], (torch.zeros(3, 5), torch.zeros(3)), num_epochs=1)
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        Config("gelu", 0.1)


# --------------------------------------------------------------------------------------
# Initialization schemes, custom initial weights, Adam, step-count training


def _deep_data(n, dim=20, seed=0):
    X, y = _data(n, dim=dim, seed=seed)
    return X - 0.5, y


# The std of each scheme, checked on one 400 x 300 layer (N = 120,000 weights). The sample
# variance s^2 of N i.i.d. draws has Var[s^2 / sigma^2] = (kappa - 1) / N (kappa = 3 for the
# normal schemes, 1.8 for the uniform default), and the sample mean has std sigma / sqrt(N).
# With N this large both are normal to within a few per cent of a standard error, so a
# bound of z = 5.5 standard errors fails a correct scheme with probability below
# 2 * P(Z > 5.5) = 3.8e-8 per check, and below 1e-6 for the 12 checks together.
Z_BOUND = 5.5
FAN_IN, FAN_OUT = 400, 300
WANT_STD = {
    "default": 1 / np.sqrt(3 * FAN_IN),
    "small": 0.3 / np.sqrt(FAN_IN),
    "large": 3.0 / np.sqrt(FAN_IN),
    "xavier": np.sqrt(2 / (FAN_IN + FAN_OUT)),
    "kaiming": np.sqrt(2 / FAN_IN),
}


@pytest.mark.parametrize("scheme", engine.INITS)
def test_each_init_scheme_has_its_std(scheme):
    W, b = engine.init_layer(scheme, FAN_IN, FAN_OUT, torch.Generator().manual_seed(11))
    assert W.shape == (FAN_OUT, FAN_IN) and b.shape == (FAN_OUT,)
    w = W.double().flatten().numpy()
    n, sigma = w.size, WANT_STD[scheme]
    kappa = 1.8 if scheme == "default" else 3.0
    ratio = w.var() / sigma**2
    assert abs(ratio - 1) <= Z_BOUND * np.sqrt((kappa - 1) / n), f"{scheme}: var ratio {ratio}"
    assert abs(w.mean()) <= Z_BOUND * sigma / np.sqrt(n), f"{scheme}: mean {w.mean()}"
    if scheme == "default":
        bound = 1 / np.sqrt(FAN_IN)
        assert np.abs(w).max() <= bound and np.abs(b.numpy()).max() <= bound
    else:
        assert not b.any(), f"{scheme}: biases must start at zero"


def test_the_engine_starts_from_the_configs_scheme_and_generator():
    """Untrained results (0 epochs) are the scheme's draws from Generator(seed)."""
    sizes = (20, 16, 10)
    configs = [Config("relu", 0.1, seed, init=init) for init in engine.INITS for seed in (0, 3)]
    results = engine.train(
        configs, _deep_data(16), num_epochs=0, layer_sizes=sizes, cache=False, progress=False
    )
    for config, result in zip(configs, results, strict=True):
        g = torch.Generator().manual_seed(config.seed)
        for k, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), 1):
            W, b = engine.init_layer(config.init, fan_in, fan_out, g)
            np.testing.assert_array_equal(result.params[f"W{k}"], W.numpy())
            np.testing.assert_array_equal(result.params[f"b{k}"], b.numpy())
    with pytest.raises(ValueError, match="unknown init scheme 'xavir'.*init_fn"):
        engine.train(
            [Config("relu", 0.1, init="xavir")], _deep_data(8), num_epochs=0, layer_sizes=sizes
        )


def _my_init(config, layer_sizes, generator):
    """A caller's scheme: orthogonal square layers, a scaled Gaussian elsewhere, and the
    built-in schemes for their names; biases 0.1."""
    params = []
    for fan_in, fan_out in zip(layer_sizes[:-1], layer_sizes[1:], strict=True):
        if config.init in engine.INITS:
            params.append(engine.init_layer(config.init, fan_in, fan_out, generator))
            continue
        A = torch.randn(fan_out, fan_in, generator=generator, dtype=torch.float64)
        W = torch.linalg.qr(A)[0] if fan_in == fan_out else A * 0.5 / np.sqrt(fan_in)
        params.append((W, torch.full((fan_out,), 0.1)))
    return params


MY_CONFIGS = [
    Config(act, lr, seed, init=init)
    for act in ("relu", "tanh", "swish")
    for lr in (0.01, 0.05)
    for seed in (0, 7)
    for init in ("orthogonal", "kaiming")
]


@pytest.mark.parametrize("optimizer", engine.OPTIMIZERS)
def test_custom_init_and_adam_batched_equal_training_alone(optimizer):
    """As above, with initial weights from a caller's init_fn, a deep narrow net, step
    counts that end inside an epoch, and both optimizers."""
    sizes = (20, 12, 12, 12, 10)
    train, val, test = _deep_data(100), _deep_data(50, seed=1), _deep_data(40, seed=2)
    kwargs = dict(
        num_steps=9,
        log_every=4,
        batch_size=32,
        layer_sizes=sizes,
        init_fn=_my_init,
        optimizer=optimizer,
        test_data=test,
        cache=False,
        progress=False,
    )
    mixed = engine.train(MY_CONFIGS[::-1], train, val, **kwargs)[::-1]
    for config, together in zip(MY_CONFIGS, mixed, strict=True):
        (alone,) = engine.train([config], train, val, **kwargs)
        np.testing.assert_array_equal(together.history["step"], [4, 8, 9])
        for key in engine.HISTORY_KEYS:
            np.testing.assert_array_equal(together.history[key], alone.history[key])
        for key in alone.params:
            np.testing.assert_array_equal(together.params[key], alone.params[key])
        assert together.test == alone.test and set(alone.test) == {"loss", "acc"}
    start = engine.train(
        MY_CONFIGS[:1], train, num_epochs=0, layer_sizes=sizes, init_fn=_my_init, cache=False
    )[0]
    want = _my_init(MY_CONFIGS[0], sizes, torch.Generator().manual_seed(MY_CONFIGS[0].seed))
    for k, (W, b) in enumerate(want, 1):
        np.testing.assert_array_equal(start.params[f"W{k}"], W.float().numpy())
        np.testing.assert_array_equal(start.params[f"b{k}"], b.numpy())


@pytest.mark.parametrize("sizes", [(20, 10), (20, 16, 10), (20, 10, 10, 10, 10)])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_adam_equals_torch_optim_adam(sizes, activation):
    """Five full-batch Adam steps against torch.optim.Adam (betas 0.9/0.999, eps 1e-8) on
    the same nn.Sequential in float64, from the same initial weights. The two differ in
    the order of round-off only (summation order of the batch, lerp against mul-add, fused
    against separate multiply-divide): about 1e-16 relative per operation, a few hundred
    operations per step, and Adam's step is at most about lr = 0.05 per entry, so after
    five steps the parameters agree to ~1e-14; 1e-12 leaves a wide margin, while any
    mistake in the update (a missing bias correction changes the first step by ~lr) is
    many orders larger."""
    X, y = _deep_data(24, dim=sizes[0])
    lr = 0.05
    config = Config(activation, lr, seed=4, init="kaiming")
    start = engine.train(
        [config], (X, y), num_epochs=0, layer_sizes=sizes, cache=False, dtype=torch.float64
    )[0]
    (ours,) = engine.train(
        [config],
        (X, y),
        num_steps=5,
        batch_size=len(X),
        layer_sizes=sizes,
        optimizer="adam",
        cache=False,
        progress=False,
        dtype=torch.float64,
    )
    layers = []
    for k in range(1, len(sizes)):
        linear = torch.nn.Linear(sizes[k - 1], sizes[k], dtype=torch.float64)
        with torch.no_grad():
            linear.weight.copy_(torch.as_tensor(start.params[f"W{k}"]))
            linear.bias.copy_(torch.as_tensor(start.params[f"b{k}"]))
        layers += [linear, torch.nn.ReLU() if activation == "relu" else torch.nn.Tanh()]
    net = torch.nn.Sequential(*layers[:-1])
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
    for _ in range(5):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(X.double()), y).backward()
        opt.step()
    for k, linear in enumerate(net[::2], 1):
        np.testing.assert_allclose(
            ours.params[f"W{k}"],
            linear.weight.detach().numpy(),
            rtol=0,
            atol=1e-12,
            err_msg=f"W{k}",
        )
        np.testing.assert_allclose(
            ours.params[f"b{k}"], linear.bias.detach().numpy(), rtol=0, atol=1e-12, err_msg=f"b{k}"
        )
        moved = np.abs(ours.params[f"W{k}"] - start.params[f"W{k}"]).max()
        assert moved > 0.01, "Adam did not move the weights"


def test_step_count_training_continues_across_epochs():
    """k epochs are k * ceil(N / batch) steps; step training goes on into the next pass
    with a fresh permutation; the test set is evaluated once at the end."""
    train, test = _deep_data(50), _deep_data(30, seed=3)
    config = Config("relu", 0.05, seed=1, init="xavier")
    kwargs = dict(batch_size=16, layer_sizes=(20, 10, 10), cache=False, progress=False)
    (epochs,) = engine.train([config], train, num_epochs=2, **kwargs)
    (steps,) = engine.train([config], train, num_steps=8, log_every=4, test_data=test, **kwargs)
    np.testing.assert_array_equal(epochs.history["step"], [4, 8])
    np.testing.assert_array_equal(steps.history["step"], [4, 8])
    for key in ("train_loss", "train_acc"):
        np.testing.assert_array_equal(epochs.history[key], steps.history[key])
    for key in epochs.params:
        np.testing.assert_array_equal(epochs.params[key], steps.params[key])
    assert steps.test == pytest.approx(engine.evaluate(steps, *test), abs=1e-6)
    (more,) = engine.train([config], train, num_steps=9, **kwargs)
    assert more.history["step"].tolist() == [9]
    assert not np.array_equal(more.params["W1"], steps.params["W1"])


def test_deep_narrow_and_depth_zero_nets_train_with_adam():
    X, y = _data(512, dim=784)
    for k in range(10):
        X[y == k, 10 * k : 10 * k + 10] += 2.0
    for depth in (0, 5, 30):  # 784 -> 10 directly, and constant width 10
        sizes = [784] + [10] * depth + [10]
        (result,) = engine.train(
            [Config("relu", 3e-3, 0, init="kaiming")],
            (X, y),
            num_steps=300 if depth < 30 else 20,
            batch_size=32,
            layer_sizes=sizes,
            optimizer="adam",
            test_data=(X, y),
            cache=False,
            progress=False,
        )
        assert len([k for k in result.params if k.startswith("W")]) == depth + 1
        assert np.isfinite(result.history["train_loss"]).all()
        if depth < 30:  # deeper He-initialized width-10 nets may not train: the kurtosis lab
            assert result.test["acc"] > 0.9, f"depth {depth}: accuracy {result.test['acc']}"


def test_a_changed_init_function_retrains(tmp_path):
    train = _deep_data(40)
    kwargs = dict(
        num_epochs=1, batch_size=20, layer_sizes=(20, 10), cache_dir=tmp_path, progress=False
    )
    configs = [Config("tanh", 0.1, 0, init="mine"), Config("relu", 0.1, 1, init="mine")]
    scale = {"value": 0.1}

    def init_fn(config, layer_sizes, generator):
        W = torch.randn(layer_sizes[1], layer_sizes[0], generator=generator) * scale["value"]
        return [(W, torch.zeros(layer_sizes[1]))]

    assert not any(r.cached for r in engine.train(configs, train, init_fn=init_fn, **kwargs))
    assert all(r.cached for r in engine.train(configs, train, init_fn=init_fn, **kwargs))
    scale["value"] = 0.2  # the same configurations, other initial weights: retrain
    changed = engine.train(configs, train, init_fn=init_fn, **kwargs)
    assert not any(r.cached for r in changed)
    scale["value"] = 0.1
    assert all(r.cached for r in engine.train(configs, train, init_fn=init_fn, **kwargs))


def test_bad_init_fn_and_settings_say_what_is_expected():
    train = _deep_data(8)
    config = Config("relu", 0.1, init="mine")
    with pytest.raises(ValueError, match=r"layer 1 .* W must have shape \(10, 20\)"):
        engine.train(
            [config],
            train,
            num_epochs=0,
            layer_sizes=(20, 10),
            cache=False,
            init_fn=lambda c, s, g: [(torch.zeros(20, 10), torch.zeros(10))],
        )
    with pytest.raises(ValueError, match="returned 1 layers .* has 2"):
        engine.train(
            [config],
            train,
            num_epochs=0,
            layer_sizes=(20, 5, 10),
            cache=False,
            init_fn=lambda c, s, g: [(torch.zeros(10, 20), torch.zeros(10))],
        )
    with pytest.raises(ValueError, match="exactly one of num_epochs"):
        engine.train([config], train, num_epochs=1, num_steps=1, layer_sizes=(20, 10))
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        engine.train([config], train, num_steps=1, layer_sizes=(20, 10), optimizer="rmsprop")


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", engine.ACTIVATIONS)
def test_an_activation_does_not_depend_on_where_a_network_sits_in_the_stack(name, threads):
    """ATen's CPU kernels round sigmoid, mish and SiLU differently in their vectorised loop
    and in its scalar remainder (seen with AVX-512), so a network's values would depend on
    its place in the stack. Forward and backward, one network alone and the same network
    between two others agree bit for bit, for sizes with and without a remainder, and above
    ATen's grain size (where work is split between threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        for n in (48, 444, 600, 4096, 40_000, 70_001):
            z, g = torch.randn(2, 3, 1, n, generator=gen) * 4
            beta = torch.tensor([0.7, 1.3, 2.0])[:, None, None]
            z[1], g[1] = z[1] * 1.5, g[1] * 0.5
            alone_a = engine.activation_fn(name, z[1:2], beta[1:2])
            stack_a = engine.activation_fn(name, z, beta)
            assert torch.equal(stack_a[1], alone_a[0]), (name, n, "forward")
            alone_g = _batched._activation_backward(name, g[1:2], z[1:2], alone_a, beta[1:2])
            stack_g = _batched._activation_backward(name, g, z, stack_a, beta)
            assert torch.equal(stack_g[1], alone_g[0]), (name, n, "backward")
    finally:
        torch.set_num_threads(before)
