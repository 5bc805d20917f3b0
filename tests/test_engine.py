"""The batched training engine: batched equals alone, the hand-written backward pass
equals autograd, the cache, the progress bar, CPU/CUDA selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from initlab import engine
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


def test_device_selection():
    assert engine.pick_device("cpu").type == "cpu"
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert engine.pick_device().type == want


def test_bad_input_says_what_is_expected():
    with pytest.raises(ValueError, match=r"X of shape \(N, 784\)"):
        engine.train(CONFIGS[:1], (torch.zeros(3, 5), torch.zeros(3)), num_epochs=1)
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        Config("gelu", 0.1)
