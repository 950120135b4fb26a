"""Plotly figure builders: arrays in, ``go.Figure`` out, nothing else.

Every figure has a fixed height, axis titles and hover text, and draws model A (the baseline) and model B
(the IPS model) in the same two colours everywhere in the app. Inputs are dicts ``{model label: values}``
in A, B order, so one builder serves one model or two.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.analysis.faithfulness import CamFaithfulness, ForeignCamMass
from explorer.evaluate import CalibrationBins
from explorer.stats import MeanInterval, PairedDifference, mean_interval
from explorer.training.methods import BASELINE, FEATURED, method_colour

__all__ = ["CURVE_PANELS", "MODEL_COLOURS", "TEACHER_COLOURS", "class_gap_bars",
           "confidence_histograms", "confusion_figure", "faithfulness_figure", "gap_histogram", "gap_scatter",
           "paired_differences", "patch_evidence_maps", "reliability_diagram", "training_curves_figure"]

MODEL_COLOURS = (method_colour(BASELINE), method_colour(FEATURED))  # model A (baseline), model B (IPS)
# who teaches a swapped pair: a tie (both views exactly as confident) makes a′ the teacher by the rule, not the model
TEACHER_COLOURS = {"a′ teaches": "#1b9e77", "b′ teaches": "#7570b3", "tie (a′ by the rule)": "#9a9a9a"}
# (metric, panel title, y tick format) of the training curves, in reading order: losses, then accuracy and calibration
CURVE_PANELS = (("loss", "loss", ""), ("ce", "cross-entropy", ""), ("kd", "KD term (KL·T²)", ""),
                ("train_accuracy", "train accuracy", ".0%"), ("test_accuracy", "test accuracy", ".0%"),
                ("test_ece", "test ECE (15 bins)", ".1%"))
_RUN_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "star")  # tell apart runs of one method,
_SHADES = (0.0, -0.4, 0.25, -0.65, -0.2)  # as do shades of its colour: mixed with black (< 0) or white (> 0)
_REFERENCE_SHADE = 0.55  # reference runs: their method's colour mixed with white, dashed, so no user run shares it
_LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=75, b=55), font=dict(size=13),
               legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0))
_SIDE_LEGEND = dict(orientation="v", yanchor="top", y=1, xanchor="left", x=1.02)  # clear of subplot titles


def _colour(i: int) -> str:
    return MODEL_COLOURS[i % len(MODEL_COLOURS)]


def _array(values) -> np.ndarray:
    return values.detach().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)


def gap_histogram(gaps: dict[str, Sequence[float]], height: int = 330) -> go.Figure:
    """Overlaid histograms of |conf_a - conf_b| per model, 20 bins over [0, 1]."""
    fig = go.Figure()
    for i, (name, values) in enumerate(gaps.items()):
        fig.add_trace(go.Histogram(x=_array(values), name=name, marker_color=_colour(i), opacity=0.65,
                                   xbins=dict(start=0, end=1.0001, size=0.05),
                                   hovertemplate="gap %{x}<br>%{y} pairs<extra>" + name + "</extra>"))
    fig.update_layout(**_LAYOUT, height=height, barmode="overlay", title="Confidence gap of swapped pairs",
                      xaxis_title="|conf a′ − conf b′|  (true-class probability)", yaxis_title="pairs")
    fig.update_xaxes(range=[0, 1])
    return fig


def gap_scatter(confidence_a: dict[str, Sequence[float]], confidence_b: dict[str, Sequence[float]],
                teacher_is_a: dict[str, Sequence[bool]], hover: Sequence[str], height: int = 380) -> go.Figure:
    """conf a′ vs conf b′, one panel per model, points coloured by which swapped view is the teacher (or a tie)."""
    names = list(confidence_a)
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, horizontal_spacing=0.08)
    # each label in the legend once, from the first panel with such points: an empty trace gets no legend entry
    in_legend: set[str] = set()
    for col, name in enumerate(names, start=1):
        a, b, teach_a = _array(confidence_a[name]), _array(confidence_b[name]), _array(teacher_is_a[name]).astype(bool)
        tie = a == b
        groups = zip(TEACHER_COLOURS, (teach_a & ~tie, ~teach_a & ~tie, tie), strict=True)
        for label, chosen in groups:
            first = label not in in_legend and bool(chosen.any())
            if first:
                in_legend.add(label)
            fig.add_trace(go.Scattergl(
                x=a[chosen], y=b[chosen], mode="markers", name=label, legendgroup=label, showlegend=first,
                marker=dict(color=TEACHER_COLOURS[label], size=6, opacity=0.7),
                text=[hover[i] for i in np.flatnonzero(chosen)],
                hovertemplate="%{text}<br>conf a′ %{x:.6f}, conf b′ %{y:.6f}<extra>" + label + "</extra>"), 1, col)
        fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color="#999", dash="dot", width=1),
                                 showlegend=False, hoverinfo="skip"), 1, col)
        fig.update_xaxes(title_text="conf a′  (swapped view a′, true class)", range=[-0.02, 1.02], row=1, col=col)
        fig.update_yaxes(title_text="conf b′  (swapped view b′, true class)" if col == 1 else None, range=[-0.02, 1.02],
                         row=1, col=col)
    for i, annotation in enumerate(fig.layout.annotations):
        annotation.font = dict(color=_colour(i), size=14)
    fig.update_layout(**_LAYOUT, height=height)
    fig.update_layout(title="Which swapped view teaches: conf a′ vs conf b′", legend=_SIDE_LEGEND,
                      margin=dict(t=80, r=150))
    return fig


def class_gap_bars(class_names: Sequence[str], class_means: dict[str, Sequence[float | None]],
                   height: int = 330) -> go.Figure:
    """Mean confidence gap per class, one bar group per class, one bar per model."""
    fig = go.Figure()
    for i, (name, means) in enumerate(class_means.items()):
        y = [np.nan if m is None else m for m in means]
        fig.add_trace(go.Bar(x=list(class_names), y=y, name=name, marker_color=_colour(i),
                             hovertemplate="class %{x}<br>mean gap %{y:.3f}<extra>" + name + "</extra>"))
    fig.update_layout(**_LAYOUT, height=height, barmode="group", title="Mean confidence gap per class",
                      xaxis_title="class", yaxis_title="mean |conf a′ − conf b′|")
    fig.update_xaxes(type="category")
    return fig


def reliability_diagram(bins: dict[str, CalibrationBins], height: int = 540) -> go.Figure:
    """Accuracy vs confidence per bin (ECE in the legend) over a panel of bin counts."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.06)
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                             line=dict(color="#999", dash="dot"), hoverinfo="skip"), 1, 1)
    for i, (name, b) in enumerate(bins.items()):
        edges = np.asarray(b.edges)
        centres = (edges[:-1] + edges[1:]) / 2
        count = np.asarray(b.count)
        filled = count > 0
        fig.add_trace(go.Scatter(
            x=np.asarray(b.confidence)[filled], y=np.asarray(b.accuracy)[filled], mode="lines+markers",
            name=f"{name}  (ECE {100 * b.ece:.2f} %)", legendgroup=name, marker=dict(color=_colour(i), size=8),
            line=dict(color=_colour(i)), customdata=np.stack([count[filled], edges[:-1][filled], edges[1:][filled]], 1),
            hovertemplate=("bin (%{customdata[1]:.2f}, %{customdata[2]:.2f}]<br>mean confidence %{x:.3f}"
                           "<br>accuracy %{y:.3f}<br>%{customdata[0]} samples<extra>" + name + "</extra>")), 1, 1)
        fig.add_trace(go.Bar(x=centres, y=count, name=name, legendgroup=name, showlegend=False,
                             marker_color=_colour(i),
                             hovertemplate="confidence %{x:.2f}<br>%{y} samples<extra>" + name + "</extra>"), 2, 1)
    fig.update_layout(**_LAYOUT, height=height, title="Reliability diagram", barmode="group")
    fig.update_layout(margin=dict(t=95))
    fig.update_xaxes(range=[0, 1], row=1, col=1)
    fig.update_xaxes(title_text="confidence (max softmax probability)", range=[0, 1], row=2, col=1)
    fig.update_yaxes(title_text="accuracy", range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(title_text="samples (log)", type="log", row=2, col=1)
    return fig


def confidence_histograms(confidence: dict[str, Sequence[float]], correct: dict[str, Sequence[bool]],
                          height: int = 360) -> go.Figure:
    """Overlaid histograms of max-softmax confidence, correct predictions left, incorrect right."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("correct predictions", "incorrect predictions"),
                        horizontal_spacing=0.1)
    for i, name in enumerate(confidence):
        conf, ok = _array(confidence[name]), _array(correct[name]).astype(bool)
        for col, chosen in ((1, ok), (2, ~ok)):
            fig.add_trace(go.Histogram(x=conf[chosen], name=name, legendgroup=name, showlegend=col == 1,
                                       marker_color=_colour(i), opacity=0.65,
                                       xbins=dict(start=0, end=1.0001, size=0.05),
                                       hovertemplate="confidence %{x}<br>%{y} samples<extra>" + name + "</extra>"),
                          1, col)
            fig.update_xaxes(title_text="confidence (max softmax probability)", range=[0, 1], row=1, col=col)
    fig.update_yaxes(title_text="samples (log)", type="log", row=1, col=1)
    fig.update_yaxes(title_text="samples", row=1, col=2)
    fig.update_layout(**_LAYOUT, height=height, barmode="overlay")
    fig.update_layout(title="Confidence, split by correctness", legend=_SIDE_LEGEND, margin=dict(t=80, r=110))
    return fig


def confusion_figure(confusions: dict[str, np.ndarray], difference: np.ndarray, class_names: Sequence[str],
                     height: int = 420) -> go.Figure:
    """The confusion matrix of each model and their difference (B − A), counts written in the cells."""
    names = list(confusions)
    titles = [*names, f"difference {'B − A' if len(names) == 2 else ''}"]
    fig = make_subplots(rows=1, cols=len(names) + 1, subplot_titles=titles, horizontal_spacing=0.06)
    labels = list(class_names)
    show_text = len(labels) <= 20
    for col, name in enumerate(names, start=1):
        z = _array(confusions[name])
        fig.add_trace(go.Heatmap(z=z, x=labels, y=labels, colorscale="Blues", showscale=False,
                                 text=z if show_text else None, texttemplate="%{text}" if show_text else None,
                                 zmin=0, zmax=float(np.percentile(z, 99)) if z.size else 1,
                                 hovertemplate="true %{y}, predicted %{x}<br>%{z} samples<extra>" + name + "</extra>"),
                      1, col)
    diff = _array(difference)
    bound = max(1.0, float(np.abs(diff).max()) if diff.size else 1.0)
    fig.add_trace(go.Heatmap(z=diff, x=labels, y=labels, colorscale="RdBu_r", zmid=0, zmin=-bound, zmax=bound,
                             text=diff if show_text else None, texttemplate="%{text}" if show_text else None,
                             colorbar=dict(title="B − A", thickness=12),
                             hovertemplate="true %{y}, predicted %{x}<br>change %{z}<extra>B − A</extra>"),
                  1, len(names) + 1)
    for col in range(1, len(names) + 2):
        fig.update_xaxes(title_text="predicted class", type="category", row=1, col=col)
        fig.update_yaxes(title_text="true class" if col == 1 else None, type="category", autorange="reversed",
                         row=1, col=col)
    for i, annotation in enumerate(fig.layout.annotations[:len(names)]):
        annotation.font = dict(color=_colour(i), size=14)
    fig.update_layout(**_LAYOUT, height=height, title="Confusion matrices")
    return fig


def training_curves_figure(curves: dict[str, dict[str, tuple[Sequence[float], Sequence[float]]]],
                           methods: dict[str, str], dashed: Collection[str] = (), epochs: float | None = None,
                           height: int = 560) -> go.Figure:
    """Each run's metrics against epochs, one panel per ``CURVE_PANELS`` metric, runs overlaid.

    ``curves[run][metric]`` is (epochs, values); a run is drawn in the colour of its method
    (``methods.method_colour``), runs of one method with different markers and shades, and the runs named in
    ``dashed`` (reference runs) as lighter dashed lines without markers, so no run shares a reference's colour.
    ``epochs``: where the x-axes end (the longest plotted run's epochs), so a 3-epoch run fills the panels
    instead of the left tenth of a 30-epoch reference; None fits every curve. ``uirevision`` keeps zoom and
    hidden traces while the figure is redrawn with new points.
    """
    fig = make_subplots(rows=2, cols=3, subplot_titles=[title for _, title, _ in CURVE_PANELS],
                        horizontal_spacing=0.07, vertical_spacing=0.16)
    seen: dict[str, int] = {}
    for name, metrics in curves.items():
        method = methods.get(name, "")
        reference = name in dashed
        nth = 0 if reference else seen.get(method, 0)  # the how-manieth run of its method
        seen[method] = nth + (not reference)
        colour = _mix(method_colour(method), _REFERENCE_SHADE if reference else _SHADES[nth % len(_SHADES)])
        symbol = _RUN_SYMBOLS[nth % len(_RUN_SYMBOLS)]
        for i, (metric, title, tick_format) in enumerate(CURVE_PANELS):
            x, y = metrics.get(metric, ((), ()))
            value = "%{y:" + (tick_format or ".4f") + "}"
            fig.add_trace(go.Scatter(
                x=_array(x), y=_array(y), name=name, legendgroup=name, showlegend=i == 0,
                mode="lines" if reference else "lines+markers",
                line=dict(color=colour, dash="dash" if reference else "solid", width=1.5 if reference else 2),
                marker=dict(symbol=symbol, size=6), opacity=0.75 if reference else 1.0,
                hovertemplate=f"epoch %{{x:.2f}}<br>{title} {value}<extra>{name}</extra>"),
                row=i // 3 + 1, col=i % 3 + 1)
    for i, (_, _, tick_format) in enumerate(CURVE_PANELS):
        fig.update_xaxes(title_text="epoch" if i >= 3 else None, rangemode="tozero", row=i // 3 + 1, col=i % 3 + 1,
                         range=None if epochs is None else [0, epochs])
        fig.update_yaxes(tickformat=tick_format or None, rangemode="tozero", row=i // 3 + 1, col=i % 3 + 1)
    title = "Training curves" + (" (dashed: demo checkpoints, for reference)" if set(dashed) & set(curves) else "")
    fig.update_layout(**_LAYOUT, height=height, uirevision="training-curves")
    fig.update_layout(title=title, margin=dict(t=75, b=120),
                      legend=dict(orientation="h", yanchor="top", y=-0.12, xanchor="left", x=0))
    return fig


def _mix(colour: str, mix: float) -> str:
    """``colour`` (#rrggbb) mixed with black (``mix`` < 0) or white (> 0) by ``abs(mix)``."""
    rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=float)
    mixed = rgb + ((0 if mix < 0 else 255) - rgb) * abs(mix)
    return "#" + "".join(f"{round(v):02x}" for v in mixed)


def _error_bars(summaries: Sequence[MeanInterval]) -> dict:
    """Whiskers from each mean to its 95 % interval's ends (none where one value gives no interval)."""
    return dict(type="data", symmetric=False, thickness=2, width=8,
                array=[s.high - s.mean if s.has_interval else 0 for s in summaries],
                arrayminus=[s.mean - s.low if s.has_interval else 0 for s in summaries])


def paired_differences(differences: dict[str, PairedDifference], axis_title: str, height: int | None = None
                       ) -> go.Figure:
    """One row per comparison: each seed's difference setting − baseline (a dot, hover names the seed), their
    mean (a diamond) with its 95 % t-interval (whiskers; none from one seed), and the line of no difference."""
    fig = go.Figure()
    rows = list(differences)
    for i, (name, difference) in enumerate(differences.items()):
        seeds, values = list(difference.per_seed), list(difference.per_seed.values())
        fig.add_trace(go.Scatter(
            x=values, y=[name] * len(values), mode="markers", name="one seed", legendgroup="seed", showlegend=i == 0,
            marker=dict(color="#777", size=9, opacity=0.75), customdata=seeds,
            hovertemplate="seed %{customdata}: %{x:+.4f}<extra>" + name + "</extra>"))
        interval = (f"95 % CI {difference.low:+.4f} to {difference.high:+.4f}" if difference.has_interval
                    else "one seed: no interval")
        fig.add_trace(go.Scatter(
            x=[difference.mean], y=[name], mode="markers", name="mean, 95 % CI", legendgroup="mean",
            showlegend=i == 0, error_x=_error_bars([difference]),
            marker=dict(color=MODEL_COLOURS[1], size=13, symbol="diamond"),
            hovertemplate=f"mean %{{x:+.4f}}<br>{interval}<br>{difference.n} seed(s)<extra>{name}</extra>"))
    fig.add_vline(x=0, line=dict(color="#999", dash="dot", width=1))
    fig.update_layout(**_LAYOUT, height=height or 160 + 70 * max(1, len(rows)),
                      title="Paired per-seed differences (setting − baseline)", xaxis_title=axis_title)
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=rows[::-1], automargin=True)
    return fig


def patch_evidence_maps(image_a: np.ndarray, image_b: np.ndarray,
                        maps: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], patch_size: int,
                        height: int | None = None) -> go.Figure:
    """Per model (a row), the change of each image's true-class confidence when the patch at one position alone
    comes from the other image, as a heat map over that image's patch grid; the exchanged positions outlined.

    ``image_a``/``image_b``: uint8 [H, W, 3]; ``maps[model]`` = (delta_a, delta_b, exchanged mask), each
    [H / patch_size, W / patch_size]. Red raises the confidence, blue lowers it, on one scale for all panels.
    The figure is built in one call from plain dicts (its axes laid out here, not by ``make_subplots``): it is
    redrawn with every pair the Patch swap tab shows, and Plotly's per-property validation would take 4x longer.
    """
    rows = max(1, len(maps))
    limit = max([float(np.abs(d).max()) for a, b, _ in maps.values() for d in (a, b)] + [1e-6])
    data: list[dict] = []
    layout: dict = {"annotations": []}
    for row, (name, (delta_a, delta_b, mask)) in enumerate(maps.items()):
        top = 1 - row / rows
        for col, (image, delta, other) in enumerate(((image_a, delta_a, "b"), (image_b, delta_b, "a"))):
            n = row * 2 + col + 1
            x, y = ("x", "y") if n == 1 else (f"x{n}", f"y{n}")
            outline_x, outline_y = _outlines(mask, patch_size)
            centres = [patch_size * np.arange(size) + (patch_size - 1) / 2 for size in delta.shape]
            data += [dict(type="image", z=image, xaxis=x, yaxis=y, hoverinfo="skip"),
                     dict(type="heatmap", z=delta, x=centres[1], y=centres[0], zmin=-limit, zmax=limit,
                          colorscale="RdBu", reversescale=True, opacity=0.6, xgap=1, ygap=1, xaxis=x, yaxis=y,
                          showscale=n == 2, colorbar=dict(title=dict(text="Δ conf", side="right"), len=0.8),
                          hovertemplate=(f"patch at pixel row %{{y:.0f}}, col %{{x:.0f}} from {other}:<br>Δ true-class"
                                         f" confidence %{{z:+.4f}}<extra>{name}</extra>")),
                     dict(type="scatter", x=outline_x, y=outline_y, mode="lines", xaxis=x, yaxis=y,
                          line=dict(color="#ffbe00", width=2), hoverinfo="skip", showlegend=False)]
            axis = dict(showticklabels=False, showgrid=False, zeroline=False)
            layout["xaxis" + x[1:]] = dict(axis, domain=[0.53 * col, 0.53 * col + 0.47], anchor=y)
            layout["yaxis" + y[1:]] = dict(axis, domain=[top - 1 / rows + 0.07 / rows, top - 0.1 / rows], anchor=x,
                                           autorange="reversed", scaleanchor=x)
            layout["annotations"].append(dict(text=f"{name}: {'ab'[col]}, with {other}'s patch at one position",
                                              x=0.53 * col + 0.235, y=top - 0.02 / rows, xref="paper", yref="paper",
                                              showarrow=False, xanchor="center", yanchor="bottom"))
    fig = go.Figure(data=data, layout=dict(layout, **_LAYOUT, height=height or 80 + 330 * rows,
                                           title="Patch evidence: exchange one patch position at a time "
                                                 "(amber: the exchanged positions)"))
    return fig


def _outlines(mask: np.ndarray, patch_size: int) -> tuple[list[float | None], list[float | None]]:
    """One polyline (None between squares) around every True cell of ``mask``, in pixel coordinates: a single
    trace, where one layout shape per patch would make Plotly re-validate every shape at each addition."""
    x: list[float | None] = []
    y: list[float | None] = []
    for r, c in zip(*np.nonzero(mask), strict=True):
        left, top, right, bottom = c * patch_size - 0.5, r * patch_size - 0.5, (c + 1) * patch_size - 0.5, \
            (r + 1) * patch_size - 0.5
        x += [left, right, right, left, left, None]
        y += [top, top, bottom, bottom, top, None]
    return x, y


def faithfulness_figure(results: dict[str, CamFaithfulness], foreign: dict[str, ForeignCamMass],
                        height: int = 460) -> go.Figure:
    """Left: ROAD most- and least-relevant-first, the mean change of the true-class probability against the share
    of pixels imputed, per model with 95 % intervals. Right: ROAD combined, the CAM-mult change and the CAM
    share on swapped-in patches, per model side by side with 95 % intervals (dotted: the swapped-in area)."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4], horizontal_spacing=0.1,
                        subplot_titles=("ROAD: true-class probability change", "Summaries (95 % CI)"))
    titles = ["ROAD combined", "CAM-mult change", "CAM share on<br>swapped-in patches"]
    for i, (name, result) in enumerate(results.items()):
        removed = [100 - p for p in result.percentiles]
        for order, values, dash in (("most relevant first", result.morf, "solid"),
                                    ("least relevant first", result.lerf, "dash")):
            summaries = [mean_interval(row) for row in values]
            fig.add_trace(go.Scatter(
                x=removed, y=[s.mean for s in summaries], mode="lines+markers", name=f"{name}, {order}",
                line=dict(color=_colour(i), dash=dash), marker=dict(size=7),
                error_y=_error_bars(summaries),
                hovertemplate=f"{order}<br>%{{x}} % of pixels imputed<br>mean change %{{y:+.4f}}<extra>{name}</extra>"),
                1, 1)
        summaries = [mean_interval(result.road_combined), mean_interval(result.cam_mult_change)]
        if name in foreign:
            summaries.append(foreign[name].summary())
        offset = 0.15 * (2 * i - len(results) + 1)  # models side by side around each summary's position
        fig.add_trace(go.Scatter(
            x=[k + offset for k in range(len(summaries))], y=[s.mean for s in summaries], mode="markers", name=name,
            showlegend=False, marker=dict(color=_colour(i), size=11, symbol="diamond"),
            error_y=_error_bars(summaries), customdata=titles[:len(summaries)],
            hovertemplate="%{customdata}: %{y:+.4f}<extra>" + name + "</extra>"), 1, 2)
    areas = [m.foreign_area for m in foreign.values()]
    if areas:
        fig.add_hline(y=areas[0], line=dict(color="#999", dash="dot", width=1), row=1, col=2)
    fig.update_xaxes(title_text="pixels imputed (%)", row=1, col=1)
    fig.update_xaxes(tickvals=list(range(len(titles))), ticktext=titles, range=[-0.5, len(titles) - 0.5], row=1,
                     col=2)
    fig.update_yaxes(title_text="after − before", zeroline=True, row=1, col=1)
    fig.update_layout(**_LAYOUT, height=height)
    fig.update_layout(title="CAM faithfulness", margin=dict(t=75, b=130),
                      legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0))
    return fig
