"""An operator drives the admin in a real browser: log in, filter, stop an instance, read its
timeline, look at the dashboard. Headless Chromium from Debian with its own chromedriver; the
upstream is the in-process sandbox; everything stays on 127.0.0.1/localhost.

Screenshots go to $ARTIFACTS_DIR/screenshots/ (default: artifacts/screenshots/ in the repo).
"""

import os
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth import get_user_model
from django.utils import timezone

from instances.models import Instance, InstanceEvent, WebhookDelivery
from instances.novita.client import reset_client
from instances.novita.sandbox import Sandbox
from instances.services import admin_ops
from instances.status import Desired, Status

pytestmark = [pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
REPO = Path(__file__).resolve().parents[2]
WAIT = 15
PASSWORD = "operator-pass-2931"


def screenshot_dir() -> Path:
    base = Path(os.environ.get("ARTIFACTS_DIR") or REPO / "artifacts")
    path = base / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _require_chromium():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if not missing:
        return
    message = (
        f"{' and '.join(missing)} not found: install Debian's chromium and chromium-driver "
        "(apt-get install -y chromium chromium-driver); the browser test never downloads one"
    )
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def browser():
    _require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="admin-browser-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-default-apps",
        "--no-pings",
        "--no-proxy-server",
        # Belt and braces for the loopback-only rule: no name but localhost resolves.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
        "--window-size=1600,1000",
        f"--user-data-dir={profile}",
    ]:
        options.add_argument(arg)
    # Console messages (CSP violations among them) are read back by the tests.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager never runs, nothing is downloaded.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def sandbox(settings):
    sb = Sandbox(api_key="k", step_seconds=0.05).serve(host="127.0.0.1", port=0)
    settings.NOVITA_API_BASE_URL = sb.api_base_url
    settings.NOVITA_API_KEY = "k"
    reset_client()
    try:
        yield sb
    finally:
        sb.shutdown()
        reset_client()


@pytest.fixture
def plain_http_cookies(settings):
    # The live server speaks plain http; production keeps secure cookies.
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False


def _wait(driver):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT)


def _full_page_screenshot(driver, name: str) -> Path:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1600, max(1100, min(int(height) + 40, 4000)))
    path = screenshot_dir() / name
    assert driver.save_screenshot(str(path)), path
    driver.set_window_size(1600, 1000)
    return path


def _seed_history(parked: Instance, live: Instance, now):
    """A week of history: runs, an auto-stop, a restart, failed webhooks (for the charts)."""

    def event(instance, days_ago, hours, from_status, to_status, source="monitor"):
        InstanceEvent.objects.create(
            instance=instance,
            created_at=now - timedelta(days=days_ago, hours=hours),
            from_status=from_status,
            to_status=to_status,
            source=source,
            reason="history for the charts",
        )

    event(parked, 6, 0, "", Status.CREATING, source="api")
    event(parked, 5, 23, Status.CREATING, Status.READY)
    event(parked, 5, 10, Status.READY, Status.STOPPING, source="auto-stop")
    event(parked, 5, 9.9, Status.STOPPING, Status.STOPPED)
    event(parked, 3, 12, Status.STOPPED, Status.STARTING, source="api")
    event(parked, 3, 11.9, Status.STARTING, Status.READY)
    event(parked, 2, 2, Status.READY, Status.STOPPING, source="auto-stop")
    event(parked, 2, 1.9, Status.STOPPING, Status.STOPPED)
    for days_ago in (4, 2, 2):
        WebhookDelivery.objects.create(
            instance=parked,
            url="https://hooks.example.com/h",
            body="{}",
            state=WebhookDelivery.State.FAILED,
            attempts=8,
            created_at=now - timedelta(days=days_ago),
        )
    Instance.objects.filter(pk=live.pk).update(created_at=now - timedelta(days=1))
    event(live, 1, 0, "", Status.CREATING, source="api")
    event(live, 0, 23.8, Status.CREATING, Status.READY)


def _assert_charts_render(browser) -> str:
    """Each chart is drawn (visible, with bars) and its title readable; returns the title colour."""
    from selenium.webdriver.common.by import By

    charts = browser.find_elements(By.CSS_SELECTOR, "#charts svg[data-chart]")
    assert [c.get_attribute("data-chart") for c in charts] == ["spend", "hours", "events"]
    for chart in charts:
        assert chart.size["width"] > 300 and chart.size["height"] > 120, chart.size
        bars = chart.find_elements(By.CSS_SELECTOR, ".series rect, .series path")
        assert any(b.size["height"] > 0 and b.size["width"] > 0 for b in bars), chart.get_attribute(
            "data-chart"
        )
    title = charts[0].find_element(By.CSS_SELECTOR, ".title")
    assert "Spend and auto-stop savings" in title.text
    return browser.execute_script("return getComputedStyle(arguments[0]).fill", title)


def test_operator_stops_an_instance_from_the_admin(
    browser, sandbox, live_server, transactional_db, plain_http_cookies
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select

    # A running upstream instance and our record of it, folded in by the sync service.
    (upstream_id,) = sandbox.seed_instances(1, status="running", name_prefix="browser")
    now = timezone.now()
    instance = Instance.objects.create(
        name="browser-gpu",
        novita_instance_id=upstream_id,
        product_name="RTX 4090 24GB",
        template_id="pytorch-jupyter",
        status=Status.READY,
        desired_status=Desired.RUNNING,
        ready_at=now - timedelta(minutes=5),
        last_used_at=now - timedelta(minutes=2),
        auto_stop_at=now + timedelta(minutes=18),
        price_per_hour=35000,
    )
    admin_ops.sync_now(instance, actor="setup")
    parked = Instance.objects.create(
        name="parked-gpu",
        novita_instance_id=None,
        product_name="RTX 4090 24GB",
        template_id="pytorch-jupyter",
        status=Status.STOPPED,
        desired_status=Desired.STOPPED,
        price_per_hour=70000,
        created_at=now - timedelta(days=6),
    )
    _seed_history(parked, instance, now)
    get_user_model().objects.create_superuser("operator", "op@example.com", PASSWORD)
    base = live_server.url
    wait = _wait(browser)

    browser.get(f"{base}/admin/login/?next=/admin/")
    browser.find_element(By.ID, "id_username").send_keys("operator")
    browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "#login-form [type=submit]").click()
    wait.until(ec.presence_of_element_located((By.ID, "operator-dashboard-link")))

    browser.find_element(By.LINK_TEXT, "Operator dashboard").click()
    wait.until(ec.presence_of_element_located((By.ID, "by-status")))
    assert browser.find_element(By.CSS_SELECTOR, "#fig-spend .value").text == "$0.35/h"
    ready = browser.find_element(By.CSS_SELECTOR, "#by-status tr[data-status=ready] .count")
    assert ready.text == "1"
    assert browser.find_element(By.CSS_SELECTOR, "#fig-breaker .value").text == "closed"
    light = _assert_charts_render(browser)
    _full_page_screenshot(browser, "admin-dashboard.png")
    # The admin's dark theme: the charts' text follows the theme's colours.
    browser.execute_script("document.documentElement.dataset.theme = 'dark'")
    dark = _assert_charts_render(browser)
    assert dark != light
    _full_page_screenshot(browser, "admin-dashboard-dark.png")
    browser.execute_script("document.documentElement.dataset.theme = 'light'")

    browser.get(f"{base}/admin/instances/instance/")
    assert "parked-gpu" in browser.page_source
    browser.find_element(
        By.XPATH, "//details[@data-filter-title='status']//a[normalize-space()='Ready']"
    ).click()
    wait.until(ec.url_contains("status__exact=ready"))
    assert "browser-gpu" in browser.page_source
    assert "parked-gpu" not in browser.page_source
    _full_page_screenshot(browser, "admin-instance-list.png")

    browser.find_element(By.CSS_SELECTOR, f"input.action-select[value='{instance.pk}']").click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("stop")
    browser.find_element(By.CSS_SELECTOR, "button[name=index]").click()
    message = wait.until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "ul.messagelist li.success"))
    )
    assert message.text == f"{instance.pk}: stop requested"

    browser.get(f"{base}/admin/instances/instance/{quote(instance.pk)}/change/")
    badge = browser.find_element(By.CSS_SELECTOR, ".field-status_badge .status-badge")
    assert badge.text == "stopping"
    event = browser.find_element(
        By.CSS_SELECTOR, "tr.event[data-to-status=stopping][data-source=admin]"
    )
    assert "ready → stopping" in event.text
    assert "operator" in event.text and "stop requested by operator" in event.text
    _full_page_screenshot(browser, "admin-instance-page.png")
    assert sandbox.status(upstream_id) in ("toStop", "stopping", "exited")

    browser.get(f"{base}/admin/dashboard/")
    wait.until(ec.presence_of_element_located((By.ID, "by-status")))
    stopping = browser.find_element(By.CSS_SELECTOR, "#by-status tr[data-status=stopping] .count")
    assert stopping.text == "1"
    assert browser.find_element(By.CSS_SELECTOR, "#fig-spend .value").text == "$0.00/h"


def _csp_violations(driver) -> list[str]:
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if "Content Security Policy" in entry["message"] or "Refused to" in entry["message"]
    ]


def test_admin_and_api_docs_work_under_the_content_security_policy(
    browser, sandbox, live_server, transactional_db, plain_http_cookies
):
    import requests
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    base = live_server.url
    for path in ("/admin/login/", "/api/docs/"):
        header = requests.get(f"{base}{path}", timeout=10).headers["Content-Security-Policy"]
        scripts = next(d for d in header.split(";") if d.strip().startswith("script-src"))
        assert scripts.split() == ["script-src", "'self'"]
    (upstream_id,) = sandbox.seed_instances(1, status="running", name_prefix="csp")
    instance = Instance.objects.create(
        name="csp-gpu",
        novita_instance_id=upstream_id,
        product_name="RTX 4090 24GB",
        template_id="pytorch-jupyter",
        status=Status.READY,
        desired_status=Desired.RUNNING,
        ready_at=timezone.now() - timedelta(minutes=5),
    )
    admin_ops.sync_now(instance, actor="setup")
    get_user_model().objects.create_superuser("operator", "op@example.com", PASSWORD)
    wait = _wait(browser)

    browser.get(f"{base}/admin/login/?next=/admin/")
    browser.find_element(By.ID, "id_username").send_keys("operator")
    browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "#login-form [type=submit]").click()
    wait.until(ec.presence_of_element_located((By.ID, "operator-dashboard-link")))
    pages = [
        ("/admin/dashboard/", "by-status"),
        ("/admin/instances/instance/", "changelist"),
        (f"/admin/instances/instance/{quote(instance.pk)}/change/", "content-main"),
        ("/admin/ops/apikey/add/", "apikey_form"),
    ]
    for path, element_id in pages:
        browser.get(f"{base}{path}")
        wait.until(ec.presence_of_element_located((By.ID, element_id)))
    # Issue a key: it is shown once on the next page, and no cookie carries it.
    browser.find_element(By.ID, "id_name").send_keys("csp-team")
    browser.find_element(By.NAME, "_save").click()
    message = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "ul.messagelist li")))
    assert "ngw_" in message.text
    assert all("ngw_" not in cookie["value"] for cookie in browser.get_cookies())
    # The admin's own scripts still run: the action checkbox toggles the selection counter.
    browser.get(f"{base}/admin/instances/instance/")
    browser.find_element(By.ID, "action-toggle").click()
    counter = browser.find_element(By.CSS_SELECTOR, ".action-counter")
    wait.until(lambda d: "1 of 1 selected" in counter.text)

    browser.get(f"{base}/api/docs/")
    title = wait.until(
        ec.presence_of_element_located((By.CSS_SELECTOR, ".swagger-ui .info .title"))
    )
    assert "Novita GPU gateway API" in title.text
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".opblock")))
    _full_page_screenshot(browser, "api-docs.png")
    violations = _csp_violations(browser)
    assert violations == [], "\n".join(violations)
