"""The interactive page in real headless Chromium: step with buttons, slider and keys; read numbers.

This test FAILS (never skips) when Playwright or Chromium is missing: CI installs both
(`pip install -e '.[test]'`, and Debian's `chromium` package in .ci/run).
"""

import os
import shutil

import numpy as np
import pytest

import unrolled
from unrolled import layers


@pytest.fixture(autouse=True)
def _keep_layer_names():
    """Leave the global auto-name counters as found: other tests compare auto names with Keras's."""
    from unrolled.layers import base

    saved = dict(base._name_counts)
    yield
    base._name_counts.clear()
    base._name_counts.update(saved)

CHROMIUM = os.environ.get("UNROLLED_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        pytest.fail(f"Playwright is missing ({error}); install the test extras: "
                    f"pip install -e '.[test]'", pytrace=False)
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium is missing at {CHROMIUM}; install it (apt-get install -y "
                    f"chromium) or set UNROLLED_CHROMIUM.", pytrace=False)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser, tr, tmp_path):
    path = tr.save_html(str(tmp_path / "page.html"))
    page = browser.new_page()
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    requests = []
    page.on("request", lambda r: requests.append(r.url) if not r.url.startswith(("file:", "data:"))
            else None)
    page.goto("file://" + path)
    return page, errors, requests


def shown(page, table_id):
    return np.array([float(v) for v in page.eval_on_selector_all(
        f"#{table_id} td", "cells => cells.map(c => c.dataset.value)")])


def current_k(page):
    return int(page.get_attribute("#step-label", "data-k"))


def check_step(page, tr, k, sample=0):
    assert current_k(page) == k
    step = tr.steps[k]
    assert int(page.get_attribute("#step-label", "data-t")) == step.t
    assert int(page.input_value("#step-slider")) == k
    for d, values in enumerate(step.cells):
        for name in ("xU", "hW", "z", "h"):
            np.testing.assert_allclose(shown(page, f"v-{d}-{name}"), values[name][sample],
                                       atol=1e-6, err_msg=f"step {k} cell {d} {name}")
    np.testing.assert_allclose(shown(page, "v-out"), step.output[sample], atol=1e-6)
    # the highlighted box is this step's
    fills = page.eval_on_selector_all(
        '#diagram g[id^="cell-"] path', "ps => ps.map(p => [p.parentNode.id, p.style.fill])")
    lit = sorted(gid for gid, fill in fills if fill in ("rgb(253, 186, 116)", "#fdba74"))
    assert lit == sorted(f"cell-{d}-{k}" for d in range(tr.depth))


def test_page_steps_forward_and_back_and_shows_the_trace(browser, tmp_path, rng):
    layer = layers.RNN([layers.SimpleRNNCell(3), layers.SimpleRNNCell(2)], return_sequences=True)
    x = rng.normal(size=(2, 4, 3)).astype("float32")
    mask = np.array([[1, 1, 0, 1], [1, 1, 1, 1]], dtype=bool)
    tr = unrolled.trace(layer, x, mask=mask)
    page, errors, requests = open_page(browser, tr, tmp_path)
    try:
        check_step(page, tr, 0)
        page.click("#btn-next")
        check_step(page, tr, 1)
        page.keyboard.press("ArrowRight")
        check_step(page, tr, 2)
        assert page.get_attribute("#mask-flag", "data-masked") == "true"   # sample 0 is masked
        page.select_option("#sample-select", "1")
        check_step(page, tr, 2, sample=1)
        assert page.get_attribute("#mask-flag", "data-masked") == "false"
        page.select_option("#sample-select", "0")
        page.keyboard.press("ArrowLeft")
        check_step(page, tr, 1)
        page.click("#btn-prev")
        check_step(page, tr, 0)
        page.click("#btn-prev")                                            # stays at the start
        check_step(page, tr, 0)
        assert not page.is_visible("#compare")
        page.fill("#step-slider", "3")                                     # the slider
        check_step(page, tr, 3)
        assert page.is_visible("#compare")                                 # the end compares
        assert float(page.get_attribute("#maxdiff", "data-value")) == 0.0
        assert float(page.get_attribute("#maxdiff-normal", "data-value")) < 1e-6
        page.click("#btn-first")
        check_step(page, tr, 0)
        page.click("#btn-last")
        check_step(page, tr, 3)
    finally:
        page.close()
    assert errors == [] and requests == []


def test_page_for_a_collapsed_sequence_and_a_cell(browser, tmp_path, rng):
    layer = layers.SimpleRNN(2, go_backwards=True)
    tr = unrolled.trace(layer, rng.normal(size=(1, 12, 3)).astype("float32"))
    page, errors, _ = open_page(browser, tr, tmp_path)
    try:
        for _ in range(5):
            page.keyboard.press("ArrowRight")
        assert current_k(page) == 5 and int(page.get_attribute("#step-label", "data-t")) == 6
        # step 6 is hidden in the ellipsis, which lights up instead
        fill = page.eval_on_selector("#diagram g#ellipsis path", "p => p.style.fill")
        assert fill in ("rgb(253, 186, 116)", "#fdba74")
        np.testing.assert_allclose(shown(page, "v-0-h"), tr.steps[5].cells[0]["h"][0], atol=1e-6)
    finally:
        page.close()
    cell_trace = unrolled.trace(layers.SimpleRNNCell(3), rng.normal(size=(2, 4)))
    page, more_errors, _ = open_page(browser, cell_trace, tmp_path)
    try:
        np.testing.assert_allclose(shown(page, "v-0-h"), cell_trace.steps[0].cells[0]["h"][0],
                                   atol=1e-6)
        assert page.is_visible("#compare")
    finally:
        page.close()
    assert errors == [] and more_errors == []


def test_model_page_menu_chooses_the_layer_to_step_through(browser, tmp_path, rng):
    model = unrolled.Sequential([
        unrolled.Input((4, 3)), layers.Masking(0.0, name="masking"),
        layers.SimpleRNN(3, return_sequences=True, name="first"),
        layers.Bidirectional(layers.SimpleRNN(2, return_sequences=True, name="rnn"), name="bi")])
    x = rng.normal(size=(2, 4, 3)).astype("float32")
    x[0, 3] = 0.0
    mt = unrolled.trace(model, x)
    path = mt.save_html(str(tmp_path / "model.html"))
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        page.goto("file://" + path)
        frames = page.locator("iframe.layer-page")
        assert frames.count() == 3
        assert frames.nth(0).is_visible() and not frames.nth(2).is_visible()
        page.select_option("#layer-select", "2")                  # backward_rnn
        assert frames.nth(2).is_visible() and not frames.nth(0).is_visible()
        inner = page.frame_locator("iframe.layer-page >> nth=2")
        inner.locator("#btn-next").click()
        tr = mt["backward_rnn"]
        assert inner.locator("#step-label").get_attribute("data-t") == str(tr.steps[1].t) == "2"
        values = inner.locator("#v-0-h td").evaluate_all("cs => cs.map(c => c.dataset.value)")
        np.testing.assert_allclose([float(v) for v in values], tr.steps[1].cells[0]["h"][0],
                                   atol=1e-6)
    finally:
        page.close()
    assert errors == []
