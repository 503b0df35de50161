"""The home page, driven headlessly with Streamlit's AppTest."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("ARML_RUNS_DIR", str(tmp_path / "runs"))
    at = AppTest.from_file(APP, default_timeout=120)
    return at


def _chart(at, key):
    for el in at.get("plotly_chart"):
        spec = json.loads(el.proto.spec)
        yield spec


def test_home_renders_and_trains_on_figure1(app, tmp_path):
    at = app.run()
    assert not at.exception
    assert at.selectbox(key="dataset").value == "figure1"
    at.number_input(key="arml_epochs").set_value(50)
    at.button(key="train").click().run()
    assert not at.exception and not at.error
    specs = list(_chart(at, "curve"))
    names = {t["name"] for t in specs[0]["data"]}
    assert names == {"Euclidean (exact)", "ARML (exact)"}
    # the metric was saved under runs/ so a reload loses nothing
    assert len(list((tmp_path / "runs").glob("figure1__arml__*.npz"))) == 1
    # a third method changes what is drawn
    at.multiselect(key="methods").select("lfda")
    at.button(key="train").click().run()
    names = {t["name"] for t in list(_chart(at, "curve"))[0]["data"]}
    assert "LFDA (exact)" in names and len(names) == 3


def test_even_k_is_an_error_message(app):
    at = app.run()
    at.number_input(key="K").set_value(2).run()
    assert not at.exception
    assert any("must be odd" in e.value for e in at.error)


def test_k_larger_than_a_class(app):
    at = app.run()
    at.number_input(key="K").set_value(11).run()
    assert any("larger than class" in e.value for e in at.error)


def test_empty_method_selection(app):
    at = app.run()
    at.multiselect(key="methods").set_value([]).run()
    assert not at.exception
    assert any("at least one method" in i.value for i in at.info)
