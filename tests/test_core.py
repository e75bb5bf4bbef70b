"""The shared core (dolly/): the one "local path or Hub id" rule, and the layout rule that keeps the tools apart."""
import ast
from pathlib import Path

import pytest

from dolly.data import DataError, load_records
from dolly.source import hub_id, is_local

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("explorer", "space", "train")


@pytest.mark.parametrize("name, local", [
    ("databricks/databricks-dolly-15k", False), ("EleutherAI/pythia-1.4b", False), ("gpt2", False),
    ("./model", True), ("/abs/missing", True), ("~/x", True), ("a/b/c", True), ("data.jsonl", True),
    ("dir\\file", True), ("", False),
])
def test_what_reads_as_a_path(name, local):
    assert is_local(name) is local


def test_a_path_that_exists_is_local_even_when_it_looks_like_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "owner" / "name").mkdir(parents=True)
    assert is_local("owner/name") and hub_id("owner/name") is None
    assert hub_id("someone/else") == "someone/else"


def test_a_local_folder_of_garbage_is_a_file_error_never_a_hub_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "notes.bin").write_bytes(b"\x00\x01garbage")
    with pytest.raises(DataError) as error:
        load_records(str(folder))
    assert str(folder) in str(error.value) and "Hub" not in str(error.value)
    # The same folder name given relative to the working directory: still the folder, still no Hub.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as error:
        load_records("junk")
    assert "junk" in str(error.value) and "Hub" not in str(error.value)


def test_a_local_model_folder_without_a_config_is_a_folder_error(tmp_path, monkeypatch):
    from space.model import ModelError, load_model

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mymodel").mkdir()
    with pytest.raises(ModelError, match="no config.json") as error:
        load_model("mymodel", "cpu")
    assert "Hub" not in str(error.value)


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_the_tools_import_the_core_and_never_each_other():
    for tool in TOOLS:
        for path in (ROOT / tool).rglob("*.py"):
            others = imports_of(path) & (set(TOOLS) - {tool})
            assert not others, f"{path.relative_to(ROOT)} imports {sorted(others)}: share it through dolly/ instead"
    for path in (ROOT / "dolly").rglob("*.py"):
        assert not imports_of(path) & set(TOOLS), f"{path.relative_to(ROOT)}: the core must not import a tool"


@pytest.mark.parametrize("value, expected", [
    (7, 7), (7.0, 7), ("7", 7), (" 7 ", 7), ("7.0", 7), ("1e3", 1000), (-1, -1),
    (2**63 - 1, 2**63 - 1), ("9007199254740993", 9007199254740993),  # exact: through a float it would round
])
def test_whole_numbers_as_forms_and_clients_send_them(value, expected):
    from dolly.numbers import whole_number

    number = whole_number(value)
    assert number == expected and type(number) is int


@pytest.mark.parametrize("value", [7.5, "7.5", "abc", "", True, False, None, [7], float("nan"), "inf", float("-inf")])
def test_what_is_no_whole_number(value):
    from dolly.numbers import whole_number

    with pytest.raises(ValueError):
        whole_number(value)


def test_exact_numbers_keep_their_kind():
    from dolly.numbers import exact_number

    assert exact_number(" 0.5 ") == 0.5 and exact_number("2") == 2 and type(exact_number("2")) is int
    with pytest.raises(ValueError, match="finite"):
        exact_number("nan")
