"""What the browser tests share: the viewport sizes, opening pages, screenshots and axe-core.

Every helper waits for a state (a selector, a text, a value), never for time, so a busy machine only
makes a test slower. Screenshots go to tests/screenshots/ (git ignores it) for anyone to look at.
"""
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import expect

WIDE = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 60_000  # generous: two cores shared with other work
SCREENSHOTS = Path(__file__).parent / "screenshots"
# The WCAG 2.1 A/AA rules axe-core knows.
WCAG = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}


@contextmanager
def page_opener(browser, ready):
    """Yields open(url, size=WIDE, **kwargs): a new page of that viewport size at `url`, returned once
    `ready(page, **kwargs)` has returned. Every page opened is closed at the end."""
    contexts = []

    def open_(url, size=WIDE, **kwargs):
        context = browser.new_context(viewport=size)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        page.goto(url)
        ready(page, **kwargs)
        return page

    try:
        yield open_
    finally:
        for context in contexts:
            context.close()


def screenshot(page, name: str) -> Path:
    """tests/screenshots/NAME-WxH.png of what the page shows now."""
    size = page.viewport_size
    path = SCREENSHOTS / f"{name}-{size['width']}x{size['height']}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    return path


def wait_idle(page) -> None:
    """Wait until no Gradio event is running (its status tracker would take the next click)."""
    page.wait_for_function("() => !document.querySelector('.pending, .generating')")


def type_setting(page, box, value: str, shown=None, confirm: str = "Enter") -> None:
    """Type `value` into a settings box and confirm it (`confirm` key), as a person would, until `shown` (the
    box itself by default; a slider's range for its number box) holds it. Typed in the instant the settings
    panel opens, while its controls are being drawn, the value was seen to fall back to the default on a busy
    machine (never once drawn); a person who saw that would type it again."""
    shown = box if shown is None else shown
    for _ in range(20):
        box.fill(value)
        box.press(confirm)
        wait_idle(page)
        try:
            expect(shown).to_have_value(value, timeout=3_000)
            return
        except AssertionError:
            continue
    expect(shown).to_have_value(value)


def axe_violations(page, every_rule: bool = False) -> list[str]:
    """Serious or critical WCAG 2.1 A/AA violations axe-core finds on the page, as readable lines.
    `every_rule`: every rule axe-core runs by default instead (all its tags, best practices included, but not
    the AAA ones, which it leaves off), and moderate violations too.

    Run once no event is pending, every component is drawn and every fade has ended: mid-fade (Gradio dims an
    output while its event runs, then fades it back) the text measures at half its contrast, and a component
    whose code is still loading is a bare `.loading` placeholder outside any landmark (on a busy machine).
    """
    from axe_playwright_python.sync_playwright import Axe

    wait_idle(page)
    page.wait_for_function("() => !document.querySelector('.loading')")
    page.wait_for_function("() => document.getAnimations().every(a => a.playState !== 'running'"
                           " || a.effect?.getComputedTiming().iterations === Infinity)")

    results = Axe().run(page, options=None if every_rule else WCAG).response
    impacts = ("moderate", "serious", "critical") if every_rule else ("serious", "critical")
    return [f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']][:5]} {v['nodes'][0]['failureSummary'][:300]}"
            for v in results["violations"] if v["impact"] in impacts]


def aaa_contrast_nodes(page) -> int:
    """How many elements fail AAA's enhanced contrast (7:1): reported, not a gate."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page, options={"runOnly": {"type": "rule", "values": ["color-contrast-enhanced"]}}).response
    return sum(len(v["nodes"]) for v in results["violations"])
