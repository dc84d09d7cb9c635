"""Headless tests of the notebook dashboard (no browser): the form, the pure figures, the event
→ widget path, Run/Stop and threads, export. Jobs are the synthetic :class:`DemoJob` (fast,
deterministic) plus one tiny run of the real engine when it is installed.
"""

from __future__ import annotations

import doctest
import importlib
import threading
import time

import numpy as np
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("plotly")
pytest.importorskip("nglview")

from cryoclass_widgets import Dashboard  # noqa: E402
from cryoclass_widgets import figures as F  # noqa: E402
from cryoclass_widgets.demo import DemoJob, DemoParticles, demo_job_factory  # noqa: E402
from cryoclass_widgets.live_plots import LivePlots, kaleido_available  # noqa: E402
from cryoclass_widgets.setup_panel import SetupPanel  # noqa: E402
from cryoclass_widgets.state import RunState, format_eta  # noqa: E402
from cryoclass_widgets.viewers import VolumeViewer, display_volume, match_shape  # noqa: E402

from cryoclass import events as ev  # noqa: E402
from cryoclass.errors import InputFileError  # noqa: E402
from cryoclass.params import (  # noqa: E402
    GUIDANCE_FILTER_RES,
    PARAM_GROUPS,
    ClassificationParams,
    param_info,
)

OUR_THREADS = ("cryoclass-dashboard-updater", "cryoclass-demo-job")


def _events(K: int = 3, n: int = 200, **kw) -> list[ev.Event]:
    seen: list[ev.Event] = []
    job = DemoJob(
        DemoParticles(n, box=32),
        ClassificationParams(n_classes=K, filter_res_A=8.0),
        delay_s=0.0,
        **kw,
    )
    job.subscribe(seen.append)
    job.run()
    return seen


def _dash(**kw) -> Dashboard:
    d = Dashboard(DemoParticles(300, box=32, pixel_size_A=2.0), job_factory=demo_job_factory(**kw))
    d.setup.fields["n_classes"].value = 3
    return d


def _our_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(OUR_THREADS)]


# --------------------------------------------------------------------------- form
def test_form_is_generated_from_param_info():
    panel = SetupPanel(DemoParticles(100, box=48))
    infos = param_info()
    assert set(panel.fields) == {i["name"] for i in infos}
    for i in infos:
        w = panel.fields[i["name"]]
        assert w.tooltip == f"{i['name']}: {i['help']}"  # the name to use in code, then help
        assert w.description == i["label"] and i["label"] != i["name"]
        if i["name"] != "filter_res_A":
            assert w.value == i["default"], i["name"]
    # the advanced parameters: one panel per group, in PARAM_GROUPS order, every one placed
    groups = [g for g in PARAM_GROUPS if g != "Common"]
    assert list(panel.advanced.titles) == groups
    for g, box in zip(groups, panel.advanced.children, strict=True):
        shown = [row.children[0] for row in box.children]
        assert [w.description for w in shown] == list(PARAM_GROUPS[g].values())
        assert all(w is panel.fields[n] for w, n in zip(shown, PARAM_GROUPS[g], strict=True))
    placed = {n for g in PARAM_GROUPS.values() for n in g}
    assert placed == {i["name"] for i in infos}  # a new parameter needs a group and a label
    # choices become dropdowns
    assert tuple(panel.fields["init_mode"].options) == ("simple", "pca", "input")


def test_path_boxes_suggest_the_projects_particle_files(tmp_path, monkeypatch):
    """The particles / passthrough boxes list the files found by their headers under the
    kernel's directory (relative paths, as the Load button resolves them), and still take any
    typed path."""
    from test_io_helpers import make_dataset

    ds = make_dataset(tmp_path / "proj")
    (ds.root / "run_model.star").write_text("data_model_classes\n\nloop_\n_rlnReferenceImage\n")
    monkeypatch.chdir(ds.root)
    panel = SetupPanel(DemoParticles(100, box=48))
    panel.suggest_thread.join(timeout=30)
    assert set(panel.path_text.options) == {
        "J5/J5_particles.cs",
        "particles30.star",
        "particles31.star",
    }
    assert panel.passthrough_text.options == ("J5/J5_passthrough_particles.cs",)
    assert panel.path_text.ensure_option is False  # a path not in the list is accepted
    panel.path_text.value = "elsewhere/other.star"
    assert panel.path_text.value == "elsewhere/other.star"
    # from another directory: the paths are relative to where the kernel runs
    monkeypatch.chdir(tmp_path)
    panel.suggest_files(ds.root).join(timeout=30)
    assert "proj/particles31.star" in panel.path_text.options
    assert SetupPanel(DemoParticles(100, box=48), suggest_dir=None).suggest_thread is None


def test_particles_info_has_the_sets_details():
    """Real particles get a collapsed *details* block (cryoclass info's summary); the demo's
    stand-in particles, which have no metadata, do not."""
    from cryoclass import sim

    ds = sim.simulate(n_particles=300, box=32, pixel_size_A=4.0, seed=1)
    info = SetupPanel(ds.particles, suggest_dir=None).particles_info.value
    assert "300 particles, box 32 px" in info and "cc-particles-details" in info
    assert "half-sets 150 / 150" in info and "8 Å →   32 px" in info
    demo = SetupPanel(DemoParticles(100, box=48), suggest_dir=None).particles_info.value
    assert "100 particles" in demo and "details" not in demo


def test_form_loads_a_params_file(tmp_path):
    panel = SetupPanel(DemoParticles(100, box=48))
    f = tmp_path / "params.yaml"
    f.write_text(
        "cryoclass_version: 0.1.0\nparams:\n  n_classes: 5\n  filter_res_A: 9.0\n"
        "  init_mode: simple\n  rms_change_check: false\n  pca_n_components: 3\n"
    )
    panel.params_path_text.value = str(f)
    panel.params_load_button.click()
    p = panel.validate()
    assert p is not None and (p.n_classes, p.filter_res_A, p.init_mode) == (5, 9.0, "simple")
    assert p.rms_change_check is False and p.pca_n_components == 3
    assert "5 parameters from params.yaml" in panel.errors["params_file"].value
    # a bad file: the reason beside the box, the form unchanged
    bad = tmp_path / "bad.yaml"
    bad.write_text("n_clases: 3\n")
    assert not panel.load_params_file(str(bad))
    assert "n_clases" in panel.errors["params_file"].value
    assert panel.fields["n_classes"].value == 5
    assert not panel.load_params_file(str(tmp_path / "missing.yaml"))
    assert "missing.yaml" in panel.errors["params_file"].value
    # a value a field cannot hold: that field unchanged, the reason beside it
    panel.set_values({"n_classes": "many", "oem_epochs": 3})
    assert panel.fields["n_classes"].value == 5 and panel.fields["oem_epochs"].value == 3
    assert "not set: &#x27;many&#x27;" in panel.errors["n_classes"].value  # HTML-escaped


def test_form_shows_field_errors_not_tracebacks():
    panel = SetupPanel(DemoParticles(100, box=48))
    assert panel.validate() is not None
    panel.fields["n_classes"].value = 0
    assert panel.validate() is None
    assert "≥ 1" in panel.errors["n_classes"].value
    panel.fields["n_classes"].value = 4  # observed: re-validates and clears
    assert panel.errors["n_classes"].value == ""
    panel.fields["scale_min"].value = 9.0  # cross-field rule, reported on the field it names
    assert panel.validate() is None and "scale_max" in panel.errors["scale_min"].value
    panel.fields["scale_min"].value = 0.2
    panel.fields["symmetry"].value = "X7"
    assert panel.validate() is None and panel.errors["symmetry"].value
    panel.fields["symmetry"].value = "D2"
    p = panel.validate()
    assert isinstance(p, ClassificationParams) and p.symmetry == "D2" and p.n_classes == 4


def test_choosing_the_gpu_without_one_is_flagged_beside_the_field(monkeypatch):
    """'gpu' on a machine without a usable GPU: the form says so beside ``device`` before any
    job starts; with a GPU (stand-in) the same choice validates."""
    from cryoclass import backend

    panel = SetupPanel(DemoParticles(100, box=48))
    monkeypatch.setattr(backend, "cupy_available", lambda: False)
    panel.fields["device"].value = "gpu"
    assert panel.validate() is None and "no usable GPU" in panel.errors["device"].value
    monkeypatch.setattr(backend, "cupy_available", lambda: True)
    p = panel.validate()
    assert p is not None and p.device == "gpu" and panel.errors["device"].value == ""
    panel.fields["device"].value = "cpu"
    assert panel.validate() is not None


def test_filter_resolution_shows_box_and_pixel_size():
    panel = SetupPanel(DemoParticles(100, box=48, pixel_size_A=2.0))
    panel.fields["filter_res_A"].value = 8.0
    assert "24 px" in panel.box_label.value and "4 Å" in panel.box_label.value
    panel.filter_slider.value = 12.0  # slider and box are linked
    assert panel.fields["filter_res_A"].value == 12.0
    assert "16 px" in panel.box_label.value and "6 Å" in panel.box_label.value
    panel.fields["filter_res_A"].value = 3.0  # finer than Nyquist (4 Å)
    assert "Nyquist" in panel.box_label.value
    assert panel.validate() is None and "Nyquist" in panel.errors["filter_res_A"].value
    assert GUIDANCE_FILTER_RES[:40] in panel.widget.children[0].value + str(
        [c.value for c in panel._filter_box.children if hasattr(c, "value")]
    )
    assert SetupPanel().box_label.value.startswith("<span")  # no particles: a hint, no error


def test_particles_path_errors_shown_beside_field(tmp_path):
    def loader(path, passthrough):
        raise InputFileError(path, "file not found")

    d = Dashboard.from_files(tmp_path / "missing.star", loader=loader)
    assert "file not found" in d.setup.errors["particles"].value
    assert d.start() is False and d.job is None
    # the real reader (cryoclass.io) reports the same way
    d2 = Dashboard.from_files(tmp_path / "missing.star")
    assert d2.setup.errors["particles"].value
    d3 = Dashboard.from_files("x.star", loader=lambda p, q: DemoParticles(50, box=40))
    assert "50 particles" in d3.setup.particles_info.value


def test_mask_file_errors(tmp_path):
    import mrcfile

    panel = SetupPanel(DemoParticles(100, box=16))
    panel.solvent_mode.value = "file"
    panel.solvent_path.value = str(tmp_path / "nope.mrc")
    assert panel.get_masks() is None and "no such file" in panel.errors["solvent_mask"].value
    with mrcfile.new(tmp_path / "m.mrc") as m:
        m.set_data(np.ones((16, 16, 16), np.float32))
    panel.solvent_path.value = str(tmp_path / "m.mrc")
    sm, fm = panel.get_masks()
    assert sm.shape == (16, 16, 16) and fm is None


# --------------------------------------------------------------------------- pure figures
def test_figures_are_pure_and_carry_the_data():
    rng = np.random.default_rng(0)
    flow = np.array([[50, 3, 0], [2, 40, 5], [0, 1, 60]])
    s = F.sankey_figure(flow, iteration=2)
    assert sum(s.data[0].link.value) == flow.sum()
    assert len(s.data[0].node.label) == 6
    m = F.flow_matrix_figure(flow)
    np.testing.assert_allclose(np.asarray(m.data[0].z).sum(0), 1.0)
    big = F.flow_matrix_figure(rng.integers(0, 9, (30, 30)))
    assert big.data[0].texttemplate is None  # no cell text at 30 classes
    ess = 1 + rng.random(1000) * 2
    h = F.ess_histogram_figure(ess, 3)
    assert sum(h.data[0].y) == 1000 and len(h.data[0].y) == 40
    a = F.class_histogram_figure(np.array([10, 20, 30]), np.array([12.0, 18.0, 30.0]))
    assert list(a.data[0].y) == [10, 20, 30] and list(a.data[1].y) == [12, 18, 30]
    sizes = F.class_sizes_figure([0, 1, 2], rng.random((3, 4)), phases=["oem", "fem", "fem"])
    assert len(sizes.data) == 4 and all(t.stackgroup == "one" for t in sizes.data)
    assert len(sizes.layout.shapes) == 1
    assert [a.text.strip() for a in sizes.layout.annotations] == ["O-EM", "F-EM"]
    assert sizes.layout.annotations[0].x == sizes.layout.shapes[0].x0 == 1.5  # F-EM from the 2nd
    freq = np.linspace(0.01, 0.12, 20)
    fsc = F.fsc_figure(freq, rng.random((2, 20)), fsc_res_A=np.array([8.0, np.nan]))
    assert [t.name for t in fsc.data] == ["class 0 (8.0 Å)", "class 1"]
    c = F.convergence_figure(
        [0, 1], [np.nan, 5.0], [0.1, 0.01], convergence_pct=2.0, rms_threshold=0.01
    )
    assert c.data[1].yaxis == "y2" and len(c.layout.shapes) == 2
    assert list(c.data[0].x) == [1, 2]  # iterations shown from 1, as the CLI counts
    # the flow plots: 0-based F-EM iteration in (events, records), counted from 1 in the title
    m = np.array([[5, 1], [0, 4]])
    assert "into F-EM iteration 2 " in F.sankey_figure(m, iteration=1).layout.title.text + " "
    assert "(F-EM iteration 2)" in F.flow_matrix_figure(m, iteration=1).layout.title.text
    # the log axis is labelled 1–2–5 in plain numbers over the data and the threshold
    assert list(c.layout.yaxis2.tickvals) == [0.01, 0.02, 0.05, 0.1]
    assert list(c.layout.yaxis2.ticktext) == ["0.01", "0.02", "0.05", "0.1"]
    narrow = F.convergence_figure([0, 1], [3.0, 1.0], [0.051, 0.06])
    assert list(narrow.layout.yaxis2.tickvals) == [0.05, 0.1]  # always two ticks
    empty = F.convergence_figure([0], [np.nan], [np.nan])
    assert empty.layout.yaxis2.tickvals is None  # nothing to scale: Plotly's default
    vols = rng.random((2, 16, 16, 16)).astype(np.float32)
    dfig = F.difference_slices_figure(vols, vols.mean(0))
    assert len(dfig.data) == 6
    np.testing.assert_allclose(dfig.data[0].z, (vols[0] - vols.mean(0))[8], rtol=1e-6)
    assert len(set(F.class_colors(40))) == 40


def test_sync_figure_updates_in_place_and_replaces_on_change():
    import plotly.graph_objects as go

    fig = go.FigureWidget(F.placeholder_figure("t", "wait"))
    sent = []
    send = fig._send_relayout_msg
    fig._send_relayout_msg = lambda d, **k: (sent.append(d), send(d, **k))
    a = F.class_histogram_figure(np.array([1, 2]), np.array([1.5, 1.5]))
    with fig.batch_update():
        F.sync_figure(fig, a)
    assert [t.type for t in fig.data] == ["bar", "bar"] and fig.layout.annotations == ()
    assert fig.layout.xaxis.visible is None  # the placeholder's hidden axes are gone
    # ... in the browser too: the removed keys were sent as null
    assert {"xaxis.visible", "yaxis.visible", "annotations"} <= set(sent[0])
    bar = fig.data[0]
    with fig.batch_update():
        F.sync_figure(fig, F.class_histogram_figure(np.array([5, 6]), np.array([5.5, 5.5])))
    assert fig.data[0] is bar and tuple(bar.y) == (5, 6)


# --------------------------------------------------------------------------- events → widgets
def test_state_folds_events():
    s = RunState()
    evs = _events()
    parts = [s.apply(e) for e in evs]
    assert s.status == "finished" and s.n_classes == 3 and s.box_c == 16
    # F-EM from its 2nd iteration (5 of 6), and at the end (the empty plots' note)
    assert sum("flow" in p for p in parts) == 6 and "flow" in parts[-1]
    assert s.series("class_mass").shape == (11, 3)
    assert format_eta(83.2) == "1:23" and format_eta(float("nan")) == "—"
    assert s.fraction_done() == 1.0 and "Finished" in s.progress_text()


def test_flow_plots_say_why_they_stayed_empty():
    from cryoclass_widgets.live_plots import build_figure

    def note(state):
        return build_figure("sankey", state).layout.annotations[0].text

    s = RunState()
    evs = _events(n_fem=1)
    for e in evs[:-1]:
        s.apply(e)
    assert note(s) == "Appears from the 2nd F-EM iteration."  # running: it may still come
    s.apply(evs[-1])
    assert s.status == "finished" and "Converged after one F-EM iteration" in note(s)
    s = RunState()
    for e in _events(n_fem=0):
        s.apply(e)
    assert "No F-EM iteration ran" in note(s)


def test_scripted_events_update_plots_progress_and_table():
    d = _dash()
    evs = _events(n=300)
    i_first = next(i for i, e in enumerate(evs) if isinstance(e, ev.IterationFinished))
    d.replay(evs[:i_first])
    assert "O-EM · iteration 0/5" in d.status.value and "phase 4/6" in d.status.value
    assert d.plots.figs["assignments"].layout.annotations  # still the placeholder
    first = evs[i_first]
    d.replay([first], reset=False)
    a = d.plots.figs["assignments"]
    np.testing.assert_array_equal(a.data[0].y, first.hard_counts)
    np.testing.assert_allclose(a.data[1].y, first.class_mass)
    assert [r["size"].value for r in d.results.rows] == [str(int(c)) for c in first.hard_counts]
    assert "O-EM" in d.status.value and "iteration 1/5" in d.status.value
    assert d.progress.value == pytest.approx(1 / 5)
    assert d.viewer.n_components == 3  # all classes overlaid
    assert d.results.export_button.disabled
    d.replay(evs[i_first + 1 :], reset=False)
    last_it = [e for e in evs if isinstance(e, ev.IterationFinished)][-1]
    np.testing.assert_array_equal(d.plots.figs["assignments"].data[0].y, last_it.hard_counts)
    assert sum(d.plots.figs["sankey"].data[0].link.value) == 300
    assert len(d.plots.figs["sizes"].data[0].x) == 11
    assert sum(d.plots.figs["ess"].data[0].y) == 300
    assert d.progress.value == 1.0 and d.progress.bar_style == "success"
    assert not d.results.export_button.disabled and d.state.result is not None
    assert not d.errors


def test_threaded_run_updates_while_running_and_finishes():
    d = _dash(delay_s=0.08)
    before = _our_threads()
    assert d.start() is True
    assert d.run_button.disabled and not d.stop_button.disabled
    assert all(w.disabled for w in d.setup.fields.values())
    seen_running = False
    t_end = time.time() + 20
    while time.time() < t_end and d.running:
        if d.plots.figs["assignments"].data and not d.plots.figs["assignments"].layout.annotations:
            seen_running = True
            break
        time.sleep(0.02)
    assert seen_running, "the plots did not update while the job was running"
    assert d.wait(30)
    assert d.state.status == "finished" and not d.errors
    assert not d.run_button.disabled and d.stop_button.disabled
    assert d.pump.n_renders >= 2
    assert _our_threads() == before


def test_stop_twice_is_safe_and_leaves_no_threads():
    d = _dash(delay_s=0.2)
    before = _our_threads()
    assert d.start()
    time.sleep(0.3)
    d.stop()
    d.stop()  # second press: no-op
    assert d.wait(10)
    d.stop()  # after the end: no-op
    assert d.job.cancel_calls == 1
    assert d.state.status == "cancelled" and "Stopped" in d.status.value
    assert d.progress.bar_style == "warning" and not d.run_button.disabled
    assert _our_threads() == before
    # and it can run again
    d.job_factory = demo_job_factory(delay_s=0.0)
    assert d.start() and d.wait(20) and d.state.status == "finished"
    assert _our_threads() == before


def test_invalid_form_does_not_start():
    d = _dash()
    d.setup.fields["n_classes"].value = 0
    assert d.start() is False and d.job is None and not _our_threads()
    assert "Fix the parameters" in d.status.value


def test_job_failure_is_shown():
    d = _dash(delay_s=0.0, fail_at=2)
    assert d.start() and d.wait(20)
    assert d.state.status == "failed" and "demo failure" in d.status.value
    assert d.progress.bar_style == "danger" and not d.run_button.disabled


def test_job_factory_errors_are_shown():
    def factory(*a, **k):
        raise RuntimeError("no engine here")

    d = Dashboard(DemoParticles(100, box=32), job_factory=factory)
    assert d.start() is False and "no engine here" in d.status.value


def test_render_errors_do_not_kill_the_updater():
    d = _dash(delay_s=0.0)

    def boom(state, parts):
        raise ValueError("plot exploded")

    d.results.update = boom
    assert d.start() and d.wait(20)
    assert d.state.status == "finished" and d.errors
    assert "plot exploded" in d.log.value


# --------------------------------------------------------------------------- export
def test_export_selected_classes(tmp_path):
    d = _dash(delay_s=0.0)
    assert d.start() and d.wait(20)
    d.results.select([0, 2])
    d.results.outdir.value = str(tmp_path / "out")
    files = d.results.export_selected()
    assert d.job.result.calls[-1] == (
        "write_classes",
        (str(tmp_path / "out"), [0, 2], ("star", "cs")),
    )
    assert all(f.exists() for f in files) and "Wrote" in d.results.status.value
    d.results.fmt_cs.value = False
    d.results.export_selected()
    assert d.job.result.calls[-1][1][2] == ("star",)
    d.results.min_probability.value = 0.8  # only confident particles: passed on, reported
    few = d.results.export_selected()
    assert d.job.result.calls[-1][1][3] == 0.8
    a = d.job.result.assignments
    sure = ((a["class"].isin([0, 2])) & (a["posterior_0"] + a["posterior_2"] >= 0.8)).sum()
    assert len(few[0].read_text().splitlines()) == 1 + sure < 1 + a["class"].isin([0, 2]).sum()
    assert "probability ≥ 0.8" in d.results.status.value
    d.results.min_probability.value = 0.0
    d.results.select([])
    assert d.results.export_selected() is None and "at least one" in d.results.status.value
    d.results.write_all()
    assert d.job.result.calls[-2][0] == "write"


def test_plot_export_html_and_png_message(tmp_path):
    plots = LivePlots()
    files = plots.export("all", "html", tmp_path)
    assert len(files) == 8 and all("plotly" in f.read_text()[:3000] for f in files)
    if not kaleido_available():
        assert plots.png_button.disabled and "kaleido" in plots.export_status.value
        with pytest.raises(RuntimeError, match="kaleido"):
            plots.export("ess", "png", tmp_path)
        plots.export_which.value = "ess"
        plots._export_clicked("png")  # the button path reports instead of raising
        assert "kaleido" in plots.export_status.value


# --------------------------------------------------------------------------- viewer
def test_viewer_swaps_add_then_remove_and_modes():
    v = VolumeViewer()
    rng = np.random.default_rng(1)
    vols = rng.random((3, 24, 24, 24)).astype(np.float32)
    v.set_data(volumes=vols, consensus=vols.mean(0), pixel_size_A=4.0)
    ids = [c.id for c, *_ in v._comps] + [v._labels.id]
    # side by side (the default): 3 maps and one shape component with their "class k" labels
    assert v.n_components == 3 and len(v.view._ngl_component_ids) == 4
    v.set_data(volumes=vols * 2)
    now = [c.id for c, *_ in v._comps] + [v._labels.id]
    assert v.n_components == 3 and not set(now) & set(ids)
    assert v.view._ngl_component_ids == now  # old ones removed
    archive = v.view._ngl_msg_archive
    loads = [m for m in archive if m["methodName"] == "loadFile"]
    assert len(loads) == 3  # the message archive does not grow with every swap
    shapes = [m for m in archive if m["methodName"] == "addShape"]
    assert len(shapes) == 1 and [t[-1] for t in shapes[0]["args"][1]] == [
        "class 0",
        "class 1",
        "class 2",
    ]
    v.show.value = "1"
    assert v.n_components == 1 and v._labels is None  # one class: no labels
    assert len(v.view._ngl_component_ids) == 1
    v.mode.value = "diff"
    assert v.n_components == 2 and "consensus" in v.info.value
    v.isolevel.value = 2.5  # updates the surfaces in place, no new maps
    assert v.n_components == 2
    v.preview_mask("solvent", np.ones((48, 48, 48), np.float32))
    assert v.show.value == "solvent" and v.n_components == 2
    q, s = display_volume(rng.random((64, 64, 64)).astype(np.float32), 32)
    assert q.shape == (32, 32, 32) and q.dtype == np.int8 and s > 0
    assert match_shape(np.ones((48,) * 3), 24).shape == (24, 24, 24)


def test_viewer_side_by_side(monkeypatch, tmp_path):
    """The default view puts class k one box and a tenth along −x (the maps' MRC origin, which
    NGL applies; its default camera shows −x to the right); with differences, each class's
    consensus + difference pair shares a place."""
    import cryoclass_widgets.viewers as V
    import mrcfile

    origins: list[tuple[float, float]] = []
    real = V.mrc_bytes

    def recording(q, vox, origin=(0.0, 0.0)):
        origins.append(origin)
        return real(q, vox, origin)

    monkeypatch.setattr(V, "mrc_bytes", recording)
    v = VolumeViewer()
    vols = np.random.default_rng(2).random((3, 24, 24, 24)).astype(np.float32)
    v.set_data(volumes=vols, consensus=vols.mean(0), pixel_size_A=4.0)
    step = -1.1 * 24 * 4.0  # Å
    assert v.show.value == "row" and "side by side" in v.info.value
    np.testing.assert_allclose(origins, [(0, 0), (step, 0), (2 * step, 0)])
    origins.clear()
    v.mode.value = "diff"
    assert v.n_components == 6
    np.testing.assert_allclose(np.array(origins)[:, 0], [0, 0, step, step, 2 * step, 2 * step])
    origins.clear()
    v.show.value = "all"  # overlaid: all at the origin
    assert v.n_components == 3 and origins == [(0, 0)] * 3
    # the origin is in the MRC header NGL reads
    # more than 4 classes: rows of a near-square grid, left to right, then down (−y)
    origins.clear()
    v.show.value = "row"
    v.mode.value = "map"
    v.set_data(volumes=np.concatenate([vols, vols]), consensus=vols.mean(0))
    cols = [(-c * 1.1 * 96, -r * 1.1 * 96) for r in range(2) for c in range(3)]
    np.testing.assert_allclose(origins[-6:], cols)
    assert "top to bottom" in v.info.value
    # the origin is in the MRC header NGL reads
    (tmp_path / "m.mrc").write_bytes(real(np.zeros((8, 8, 8), np.int8), 4.0, (35.2, -7.0)))
    with mrcfile.open(tmp_path / "m.mrc") as m:
        assert (float(m.header.origin.x), float(m.header.origin.y)) == (pytest.approx(35.2), -7.0)


def test_dashboard_mask_preview_from_file(tmp_path):
    import mrcfile

    d = _dash()
    with mrcfile.new(tmp_path / "focus.mrc") as m:
        m.set_data(np.ones((32, 32, 32), np.float32))
    d.setup.focus_mode.value = "file"
    d.setup.focus_path.value = str(tmp_path / "focus.mrc")
    d.preview_mask("focus")
    assert d.viewer.show.value == "focus" and d.viewer.n_components == 1
    d.preview_mask("solvent")  # auto: known only after a run
    assert "after a run" in d.setup.errors["solvent_mask"].value


# --------------------------------------------------------------------------- docs and engine
@pytest.mark.parametrize(
    "mod",
    [
        "figures",
        "state",
        "_events",
        "setup_panel",
        "live_plots",
        "viewers",
        "results_panel",
        "demo",
        "dashboard",
    ],
)
def test_module_docstring_examples(mod):
    m = importlib.import_module(f"cryoclass_widgets.{mod}")
    res = doctest.testmod(m, optionflags=doctest.ELLIPSIS)
    assert res.failed == 0


def _real_engine():
    try:
        from cryoclass import Classification
    except (ImportError, AttributeError):
        return None
    return Classification


@pytest.mark.skipif(_real_engine() is None, reason="cryoclass.engine.job not available yet")
def test_real_engine_tiny_run(tmp_path, monkeypatch):
    from cryoclass.sim import simulate

    ds = simulate(n_particles=300, box=32, pixel_size_A=3.0, snr=0.5, seed=0)
    params = ClassificationParams(
        n_classes=3,
        filter_res_A=9.0,
        oem_epochs=2,
        max_fem_iters=3,
        init_particles_per_class=50,
        oem_batch_size_per_class=50,
    )
    d = Dashboard(ds.particles, params=params)
    before = _our_threads()
    assert d.start(), d.status.value
    assert d.wait(240), "real job did not finish"
    assert d.state.status == "finished", (d.state.error, d.errors)
    assert not d.errors
    assert len(d.results.rows) == 3 and d.viewer.n_components >= 1
    assert d.plots.figs["assignments"].data and not d.results.export_button.disabled
    assert _our_threads() == before
    # "Write all outputs": the real files, and how to open them in RELION's class selection
    monkeypatch.chdir(tmp_path)
    d.results.outdir.value = "run1"
    files = d.results.write_all()
    assert files and (tmp_path / "run1" / "run_model.star").is_file()
    assert "relion_display --gui --class --i run1/run_model.star" in d.results.status.value
