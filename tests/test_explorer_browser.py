"""The explorer page (fsa_seg.visualization.explorer.build_page, what tools/explore.py serves) in a real headless Chromium driven
by selenium, on a tiny random-weight model: load it, upload an image, type classes, click a pixel, move a slider;
the pictures change and no error shows; a screenshot is written.

Skips when gradio, selenium or Debian's chromium / chromedriver are missing, except under ``CI=true``, where it
fails saying what is missing (``.ci/run`` installs them with tools/install_explorer_test.sh)."""
import os
import shutil
import socket
import tempfile
import time

import numpy as np
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

CHROMIUM = os.environ.get("FSA_SEG_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("FSA_SEG_CHROMEDRIVER", "/usr/bin/chromedriver")
# Debian's chromium here: no sandbox as root, no GPU, and nothing that reaches for the network in the background
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1200")


def _missing():
    missing = []
    for module in ("gradio", "selenium"):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"python package {module}")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.path.isfile(path):
            missing.append(path)
    return missing


MISSING = _missing()
if MISSING and os.environ.get("CI", "").lower() != "true":
    pytest.skip(f"explorer browser test needs {', '.join(MISSING)} (bash tools/install_explorer_test.sh)",
                allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def page_url():
    assert not MISSING, (f"CI=true: the explorer browser test needs {', '.join(MISSING)}; "
                         f"run bash tools/install_explorer_test.sh")
    from fsa_seg.apis import init_segmentor
    from fsa_seg.visualization.explorer import Explorer, ExplorerApp, build_page
    from fsa_seg.resources import CONFIG_DIR
    from tiny import TINY_CLIP

    options = {f"model.{k}": v for k, v in TINY_CLIP.items()}
    options.update({"model.vfm": "tiny-dino", "model.device": "cpu", "model.precision": "fp32",
                    "model.prob_thd": 0.0, "model.slide_crop": 0,
                    "test_dataloader.dataset.pipeline.1.scale": (2048, 96)})
    segmentor = init_segmentor(str(CONFIG_DIR / "fsa_proxy_sam_voc21.py"), options,
                               classes=[["background"], ["cat"]])
    page = build_page(ExplorerApp(Explorer(segmentor)))
    port = free_port()
    page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, share=False)
    yield f"http://127.0.0.1:{port}"
    page.close()


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="fsa-seg-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver, condition, what: str, timeout: float = 30.0):
    from selenium.common.exceptions import WebDriverException

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            value = condition(driver)
            if value:
                return value
        except WebDriverException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; status: {status_text(driver)!r}")


def status_text(driver) -> str:
    from selenium.webdriver.common.by import By

    try:
        return driver.find_element(By.ID, "status").text
    except Exception:  # noqa: BLE001
        return "<no status>"


def picture(driver, elem_id: str) -> bytes:
    """The PNG of the image a component shows (its <img> element's screenshot), or b'' when none."""
    from selenium.webdriver.common.by import By

    images = driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} img")
    return images[0].screenshot_as_png if images and images[0].size["width"] > 0 else b""


def no_error(driver) -> None:
    from selenium.webdriver.common.by import By

    assert not status_text(driver).startswith("error"), status_text(driver)
    toasts = [t.text for t in driver.find_elements(By.CSS_SELECTOR, ".toast-body") if t.is_displayed()]
    assert not toasts, toasts


def test_explorer_page_in_a_browser(page_url, browser, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    photo = tmp_path / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((96, 128, 3)) * 255).astype(np.uint8)).save(photo)

    browser.get(page_url)
    wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#classes textarea, #classes input"),
             "the page to load")
    # an image
    browser.find_element(By.CSS_SELECTOR, "#input_image input[type=file]").send_keys(str(photo))
    wait_for(browser, lambda d: status_text(d).startswith("segmented"), "the first segmentation", 60)
    no_error(browser)
    # classes
    box = browser.find_element(By.CSS_SELECTOR, "#classes textarea, #classes input")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("background,sky; cat,kitten; grass" + Keys.ENTER)
    wait_for(browser, lambda d: ", 3 classes," in status_text(d), "the new classes")
    first = picture(browser, "segmentation")
    assert first
    no_error(browser)
    # a pixel
    seg = browser.find_element(By.CSS_SELECTOR, "#segmentation img")
    ActionChains(browser).move_to_element_with_offset(seg, seg.size["width"] // 4, seg.size["height"] // 4) \
        .click().perform()
    wait_for(browser, lambda d: status_text(d).startswith("pixel (x="), "the clicked pixel's panel")
    wait_for(browser, lambda d: picture(d, "pixel_maps") and picture(d, "pixel_probs"), "the pixel's pictures")
    clicked, maps = picture(browser, "segmentation"), picture(browser, "pixel_maps")
    assert clicked != first  # the cross
    no_error(browser)
    # a slider: the keyboard moves top-p from 0.45 to 0.15
    slider = browser.find_element(By.CSS_SELECTOR, "#top_p input[type=range]")
    browser.execute_script("arguments[0].focus();", slider)  # a click would move it to where it lands
    for _ in range(6):
        slider.send_keys(Keys.ARROW_LEFT)
    wait_for(browser, lambda d: "kept features" in status_text(d) and "pixel (x=" in status_text(d)
             and picture(d, "pixel_maps") not in (b"", maps), "the pictures after the slider move")
    time.sleep(1.0)  # the last of the slider's updates
    wait_for(browser, lambda d: "kept features" in status_text(d), "the last slider update")
    assert picture(browser, "segmentation") != clicked
    # the pixel's probabilities may move by less than the bars show on random weights: they are only redrawn
    assert picture(browser, "pixel_maps") != maps and picture(browser, "pixel_probs")
    assert abs(float(slider.get_attribute("value")) - 0.15) < 1e-6
    no_error(browser)
    shot = tmp_path / "explorer.png"
    browser.save_screenshot(str(shot))
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 10_000

