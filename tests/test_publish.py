"""`python -m explorer.publish` against the fake Hub at its HTTP boundary (tests/fake_hub.py): the
contributions (or a curated export) as a dataset repo with its card; the token never printed; a bad repo id
or no token refused before anything is uploaded."""
import os
import subprocess
import sys
import uuid
from pathlib import Path

from dolly import contributions as contrib
from dolly.curation import open_store
from tests.dolly_data import make_records, write_jsonl
from tests.fake_hub import FakeHub

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_fakeSECRETtoken1234567890"


def publish(*argv, hub_url="http://127.0.0.1:9", token=TOKEN, home=None):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update({"HF_ENDPOINT": hub_url, "HF_HOME": str(home), "HF_HUB_DISABLE_TELEMETRY": "1"})
    if token:
        env["HF_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "explorer.publish", *map(str, argv)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def front_matter(readme: bytes) -> dict:
    from huggingface_hub import DatasetCard

    return DatasetCard(readme.decode()).data.to_dict()


def test_publish_contributions_and_a_curated_export(tmp_path):
    db = tmp_path / "store.sqlite3"
    with open_store(db) as store:
        for i, record in enumerate(make_records(12, seed=3)):
            contrib.save(store, record, key=str(uuid.uuid4()), author=f"w{i % 2}", license="cc-by-4.0")
        contrib.save(store, {"instruction": "A question still waiting for its answer?", "category": "open_qa"},
                     key=str(uuid.uuid4()), author="w0", license="cc-by-4.0")
    with FakeHub(TOKEN) as hub:
        done = publish("me/our-dolly", "--db", db, "--private", hub_url=hub.url, home=tmp_path / "hf")
        assert done.returncode == 0, done.stderr
        curated = write_jsonl(tmp_path / "curated.jsonl", make_records(16, seed=4))
        again = publish("me/dolly-curated", "--data", curated, hub_url=hub.url, home=tmp_path / "hf")
        assert again.returncode == 0, again.stderr
    assert TOKEN not in done.stdout + done.stderr + again.stdout + again.stderr
    assert "Published 12 records" in done.stdout and "under cc-by-4.0" in done.stdout
    assert hub.repos["me/our-dolly"]["type"] == "dataset" and hub.repos["me/our-dolly"]["visibility"] == "private"
    files = hub.files["me/our-dolly"]
    assert set(files) == {"README.md", "data/train.jsonl"}
    lines = files["data/train.jsonl"].decode().splitlines()
    assert len(lines) == 12 and all(set(eval_json(line)) == {"instruction", "context", "response", "category"} for line in lines)
    meta = front_matter(files["README.md"])
    assert meta["license"] == "cc-by-4.0" and "source_datasets" not in meta
    readme = files["README.md"].decode()
    assert "| brainstorming | 2 |" in readme and "12 written" in readme and "none (new records)" in readme

    curated_meta = front_matter(hub.files["me/dolly-curated"]["README.md"])
    assert curated_meta["license"] == "cc-by-sa-3.0" and curated_meta["source_datasets"] == ["databricks/databricks-dolly-15k"]
    assert "Parent dataset:** [databricks/databricks-dolly-15k]" in hub.files["me/dolly-curated"]["README.md"].decode()


def eval_json(line):
    import json

    return json.loads(line)


def test_bad_repo_id_or_no_token_is_refused_before_any_upload(tmp_path):
    db = tmp_path / "store.sqlite3"
    with open_store(db) as store:
        contrib.save(store, make_records(1)[0], key=str(uuid.uuid4()))
    with FakeHub(TOKEN) as hub:
        bad = publish("not a repo id", "--db", db, hub_url=hub.url, home=tmp_path / "hf")
        no_owner = publish("our-dolly", "--db", db, hub_url=hub.url, home=tmp_path / "hf")
        no_token = publish("me/our-dolly", "--db", db, hub_url=hub.url, token=None, home=tmp_path / "empty-hf")
        assert hub.requests == []  # refused before any request
        refused = publish("me/our-dolly", "--db", db, hub_url=hub.url, token="hf_wrongSECRETtoken000", home=tmp_path / "hf")
        assert not any("commit" in path or "preupload" in path for _, path in hub.requests)
    assert bad.returncode == 2 and "is not a Hub repo id" in bad.stderr
    assert no_owner.returncode == 2 and "give owner/name" in no_owner.stderr
    assert no_token.returncode == 2 and "No Hugging Face token" in no_token.stderr and "Nothing was uploaded" in no_token.stderr
    assert refused.returncode == 1 and "refused the token (HTTP 401)" in refused.stderr
    assert "hf_wrongSECRETtoken000" not in refused.stdout + refused.stderr
    assert hub.files == {}
