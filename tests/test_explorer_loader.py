"""explorer.loader.DatasetLoader: the dataset loads in a thread while the app serves; real files, real Index."""
import threading

import pytest

from dolly.data import DataError
from explorer.loader import DatasetLoader, DatasetNotReady, build_index


def gated(release: threading.Event, load=build_index):
    """A load that waits for `release` before doing the real work, so a test sees 'loading' for sure."""
    def load_after_release(source):
        assert release.wait(30), "the test never released the load"
        return load(source)
    return load_after_release


def test_loading_then_ready(dolly_jsonl, dolly_records):
    release, finished = threading.Event(), []
    loader = DatasetLoader(str(dolly_jsonl), load=gated(release), on_done=finished.append)
    assert loader.state == "loading" and not loader.wait(0)  # not started yet: still "loading", nothing to get
    loader.start()
    assert loader.start() is loader  # starting twice starts one thread
    assert loader.state == "loading" and loader.error is None
    assert not loader.wait(0.05)
    assert f"Loading dataset** {dolly_jsonl}" in loader.status() and "s so far" in loader.status()
    with pytest.raises(DatasetNotReady, match=r"The dataset is still loading \(\d+ s so far\); try again in a moment\."):
        loader.get()

    release.set()
    assert loader.wait(30)
    assert loader.state == "ready" and loader.error is None and finished == [loader]
    index = loader.get()
    assert index.num_rows == len(dolly_records) and loader.get() is index
    assert f"{len(dolly_records):,} rows" in loader.status() and "Dataset ready" in loader.status()


def test_loading_then_failed_with_the_data_error(tmp_path):
    release = threading.Event()
    missing = tmp_path / "missing.jsonl"
    loader = DatasetLoader(str(missing), load=gated(release)).start()
    assert loader.state == "loading"
    release.set()
    assert loader.wait(30)
    assert loader.state == "failed"
    assert loader.error.startswith("Data file not found") and str(missing) in loader.error
    assert "Could not load the dataset" in loader.status() and "Data file not found" in loader.status()
    with pytest.raises(DatasetNotReady, match="^The dataset did not load: Data file not found"):
        loader.get()


def test_a_bad_file_fails_with_its_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "context": "", "response": "b", "category": "open_qa"}\nnot json\n')
    loader = DatasetLoader(str(bad)).start()  # the default load: load_records + Index
    assert loader.wait(30) and loader.state == "failed"
    assert "line 2 is not valid JSON" in loader.error


def test_an_unexpected_failure_is_a_message_not_a_dead_thread(dolly_jsonl):
    def broken(source):
        raise MemoryError("no room for the index")

    loader = DatasetLoader(str(dolly_jsonl), load=broken).start()
    assert loader.wait(30) and loader.state == "failed"
    assert loader.error == f"Could not load the dataset '{dolly_jsonl}': MemoryError: no room for the index"


def test_data_error_from_a_custom_load_is_passed_through_as_is():
    def refuse(source):
        raise DataError("Could not load dataset 'x/y' from the Hugging Face Hub (offline).")

    loader = DatasetLoader("x/y", load=refuse).start()
    assert loader.wait(30) and loader.error == "Could not load dataset 'x/y' from the Hugging Face Hub (offline)."
