"""A pasted link says what it is: the HTML of `/` as a link preview (a crawler) reads it, from a
launched app, without JavaScript: one title, one set of Open Graph/Twitter tags, the app's icon and a
preview image that is really served (dolly/page_meta.py)."""
import threading
import time
from html.parser import HTMLParser
from urllib.parse import urljoin

import httpx
import pytest

from dolly.page_meta import FAVICON
from explorer.loader import DatasetLoader, build_index
from tests.conftest import NO_MODEL, serve
from tests.dolly_data import make_records, write_jsonl

MARKUP = '</title><script>alert("instruction")</script> & "quoted"'


class Head(HTMLParser):
    """The <head>'s titles, meta tags and link tags, as a browser's parser reads them."""

    def __init__(self, page: str):
        super().__init__()
        self.titles, self.metas, self.links, self.scripts = [], [], [], []
        self._in, self._done = None, False
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        if self._done:
            return
        attrs = dict(attrs)
        if tag == "title":
            self._in = "title"
            self.titles.append("")
        elif tag == "meta":
            self.metas.append(attrs)
        elif tag == "link":
            self.links.append(attrs)
        elif tag == "script":
            self._in = "script"
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == "head":
            self._done = True
        if tag in ("title", "script"):
            self._in = None

    def handle_data(self, data):
        if self._in == "title":
            self.titles[-1] += data
        elif self._in == "script":
            self.scripts[-1] += data

    def named(self, key: str) -> list[str]:
        """The content of every <meta property=key> or <meta name=key>."""
        return [m.get("content") for m in self.metas if key in (m.get("property"), m.get("name"))]


def head_of(url: str) -> Head:
    answer = httpx.get(url, timeout=60)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    return Head(answer.text)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", data[:16]
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.fixture(scope="module")
def records():
    records = make_records(60, seed=3)
    records[5] = {**records[5], "instruction": MARKUP}
    return records


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, records):
    path = write_jsonl(tmp_path_factory.mktemp("meta") / "dolly.jsonl", records)
    demo = serve("--data", path, *NO_MODEL)
    assert demo.page_data.wait(60) and demo.page_data.state == "ready"
    yield demo.local_url
    demo.close()


def test_the_page_has_one_title_one_set_of_sharing_tags_and_a_preview_image(app_url):
    head = head_of(app_url)
    assert head.titles == ["open Dolly"]
    assert len(head.named("description")) == 1 and "dolly-15k" in head.named("description")[0]
    for key in ("og:title", "og:url", "og:description", "og:image", "og:type", "twitter:card", "twitter:title",
                "twitter:image"):
        assert len(head.named(key)) == 1, (key, head.named(key))
    assert head.named("og:title") == ["open Dolly"] and head.named("og:url") == [app_url]
    assert head.named("twitter:card") == ["summary_large_image"]
    image = head.named("og:image")[0]
    assert image.startswith(app_url) and head.named("twitter:image") == [image]
    answer = httpx.get(image, timeout=60)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert png_size(answer.content) == (1200, 630) and len(answer.content) > 5000  # a drawn card, not a blank
    assert httpx.get(image, timeout=60).content == answer.content  # made once


def test_the_favicon_is_the_apps_own_and_served(app_url):
    head = head_of(app_url)
    icons = [link for link in head.links if "icon" in (link.get("rel") or "").split()]
    assert len(icons) == 1
    for url in (urljoin(app_url, icons[0]["href"]), urljoin(app_url, "/favicon.ico")):
        answer = httpx.get(url, timeout=60)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("image/svg+xml")
        assert answer.content == FAVICON.read_bytes()


def test_a_deep_link_names_its_view(app_url):
    query = "?tab=explorer&category=closed_qa&q=river"
    head = head_of(app_url + query)
    assert head.titles == ["closed_qa · river — open Dolly Explorer"]
    assert head.named("og:title") == head.titles and head.named("twitter:title") == head.titles
    assert head.named("og:url") == [app_url + query]
    assert "closed_qa" in head.named("description")[0] and "river" in head.named("description")[0]
    # A category the dataset does not have is not named; the Explorer alone is.
    assert head_of(app_url + "?tab=explorer&category=nonsense").titles == ["open Dolly Explorer"]


def test_a_link_to_a_record_is_titled_with_its_instruction(app_url, records):
    head = head_of(app_url + "?tab=explorer&row=17")
    instruction = " ".join(records[17]["instruction"].split())
    (title,) = head.titles
    assert title.endswith(" — open Dolly Explorer") and instruction[:40] in title
    assert "Record 17" in head.named("og:description")[0] and instruction[:40] in head.named("og:description")[0]
    assert head_of(app_url + "?tab=explorer&row=9999").titles == ["record 9999 — open Dolly Explorer"]
    # A row of the contributions is not the loaded dataset's row of that number: named, not described by it.
    head = head_of(app_url + "?tab=explorer&source=contributions&row=17")
    assert head.titles == ["contributions · record 17 — open Dolly Explorer"]
    assert instruction[:40] not in head.named("og:description")[0]


def test_a_deep_link_and_a_record_cannot_add_markup(app_url):
    query = "?tab=explorer&q=%3C/title%3E%3Cscript%3Ealert(1)%3C/script%3E%22%3E&row=5"
    page = httpx.get(app_url + query, timeout=60).text
    head = Head(page)
    assert "<script>alert" not in page and '</title><script>' not in page
    assert head.titles == [MARKUP + " — open Dolly Explorer"]
    assert head.named("og:url") == [app_url + query]  # the text back, intact once unescaped
    head = head_of(app_url + "?tab=explorer&q=%3Cb%3Eriver%22")
    assert head.titles == ['<b>river" — open Dolly Explorer']


def test_while_the_dataset_loads_the_page_and_the_image_answer_at_once(dolly_jsonl):
    release = threading.Event()

    def held(path):
        release.wait(60)
        return build_index(path)

    demo = serve("--data", dolly_jsonl, *NO_MODEL, dataset=DatasetLoader(str(dolly_jsonl), load=held))
    try:
        started = time.monotonic()
        head = head_of(demo.local_url + "?tab=explorer&row=17")
        assert head.titles == ["record 17 — open Dolly Explorer"]
        loading = httpx.get(head.named("og:image")[0], timeout=60)
        assert time.monotonic() - started < 20 and demo.page_data.state == "loading"
        assert loading.status_code == 200 and png_size(loading.content) == (1200, 630)
        release.set()
        assert demo.page_data.wait(60)
        # Once loaded, the card is made from the data (and is another image than the name-only one).
        loaded = httpx.get(head.named("og:image")[0], timeout=60)
        assert loaded.status_code == 200 and loaded.content != loading.content
        assert head_of(demo.local_url + "?tab=explorer&row=17").titles != ["record 17 — open Dolly Explorer"]
    finally:
        release.set()
        demo.close()


def test_under_auth_the_tags_are_generic_and_the_image_is_not_served(dolly_jsonl, dolly_records):
    demo = serve("--data", dolly_jsonl, "--auth", "alice:s3cret", *NO_MODEL,
                 dataset=DatasetLoader(str(dolly_jsonl)))
    try:
        assert demo.page_data.wait(60)
        url = demo.local_url + "?tab=explorer&category=closed_qa&q=secret&row=17"
        answer = httpx.get(url, timeout=60)
        head = Head(answer.text)
        assert '"auth_required"' in answer.text  # the login page
        assert head.titles == ["open Dolly"] and head.named("og:title") == ["open Dolly"]
        assert head.named("og:image") == [] and head.named("twitter:card") == ["summary"]
        assert dolly_records[17]["instruction"][:30] not in answer.text and "secret" not in head.titles[0]
        assert httpx.get(demo.local_url + "preview.png", timeout=60).status_code == 401
        assert httpx.get(demo.local_url + "favicon.ico", timeout=60).content == FAVICON.read_bytes()
    finally:
        demo.close()
