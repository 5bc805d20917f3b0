import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402

from initlab import plotting  # noqa: E402


def test_layer_stats_marks_zero_inf_and_nan_layers():
    ax = plotting.plot_layer_stats(
        {"fine": [1.0, 0.5, 0.25], "broken": [1.0, 0.0, np.inf]}, "variance"
    )
    assert len(ax.get_lines()) == 2
    assert [t.get_text() for t in ax.texts] == ["broken: 2 layers 0, inf or nan"]
    assert ax.get_yscale() == "log"


def test_contours_and_distance_views():
    f = lambda x: float(x @ x)  # noqa: E731
    path = np.array([[1.0, 1.0], [0.5, 0.5], [0.25, 0.25]])
    ax = plotting.plot_contours(f, {"gd": path}, xlim=(-1, 1), ylim=(-1, 1), resolution=11)
    assert ax.get_legend() is not None
    ax = plotting.plot_distance({"gd": path}, [0.0, 0.0])
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), np.linalg.norm(path, axis=1))


def test_curves_name_a_diverged_history():
    axes = plotting.plot_curves(
        {"fine": {"train_loss": [2.0, 1.0, 0.5]}, "bad": {"train_loss": [2.0, np.inf, np.nan]}},
        keys=("train_loss",),
    )
    assert [t.get_text() for t in axes[0].texts] == ["bad: inf/nan from epoch 2"]


def test_mean_range_draws_mean_and_min_max_bars():
    runs = np.array([[0.1, 0.3, 0.2], [0.5, 0.5, 0.8]])
    ax = plotting.plot_mean_range([0, 10], {"He": runs}, "depth", "accuracy")
    (container,) = ax.containers
    np.testing.assert_allclose(container.lines[0].get_ydata(), [0.2, 0.6])
    segments = container.lines[2][0].get_segments()
    np.testing.assert_allclose([seg[:, 1] for seg in segments], [[0.1, 0.3], [0.5, 0.8]])
