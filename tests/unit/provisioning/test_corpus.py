"""Broken network files are rejected with the exact located message, before anything else runs.

Each file in corpus/ is one case; its `# expect:` header lines are the whole error, in order.
The cases too big to commit (10 MB, 10,000 levels deep, invalid bytes) are generated here.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from clubs.core.yamlconf import ConfigError
from clubs.provisioning.load import load_network

CORPUS = Path(__file__).parent / "corpus"
CASES = sorted(CORPUS.glob("*.yaml"))


def expected(path: Path) -> list[str]:
    prefix = "# expect: "
    return [
        line[len(prefix) :] for line in path.read_text().splitlines() if line.startswith(prefix)
    ]


def test_the_corpus_has_at_least_thirty_cases_each_with_an_expectation() -> None:
    assert len(CASES) >= 30
    assert all(expected(path) for path in CASES)


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_broken_file_is_rejected_with_the_exact_located_messages(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(CORPUS)
    with pytest.raises(ConfigError) as caught:
        load_network(path.name)
    assert str(caught.value).splitlines() == expected(path)


def _reject(path: Path) -> tuple[str, int]:
    """The error text and the peak memory (bytes) that rejecting `path` took."""
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError) as caught:
            load_network(path)
        return str(caught.value), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_ten_megabyte_file_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"version: 1\n" + b"# padding padding padding\n" * 400_000)
    assert path.stat().st_size > 10_000_000
    message, peak = _reject(path)
    assert message == f"{path}: larger than 1048576 bytes"
    assert peak < 8 * 2**20


def test_billion_laughs_is_refused_in_little_memory() -> None:
    message, peak = _reject(CORPUS / "billion-laughs.yaml")
    assert message.endswith("more than 500000 values once aliases are expanded")
    assert peak < 16 * 2**20


def test_ten_thousand_levels_of_flow_nesting_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("version: " + "[" * 10_000 + "]" * 10_000 + "\n")
    with pytest.raises(ConfigError) as caught:
        load_network(path)
    assert str(caught.value) == f"{path}:1:59: nested deeper than 50 levels"


def test_ten_thousand_levels_of_block_nesting_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("version:\n" + "- " * 10_000 + "x\n")
    with pytest.raises(ConfigError) as caught:
        load_network(path)
    assert str(caught.value) == f"{path}:2:99: nested deeper than 50 levels"


def test_bytes_that_are_not_utf8_are_refused_at_their_place(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("version: 1\nname: Москва\n".encode() + b"topic: caf\xe9\n")
    message, _ = _reject(path)
    assert message == f"{path}:3:11: not UTF-8 (byte 0xe9)"


def test_nul_byte_is_refused_at_its_place(tmp_path: Path) -> None:
    path = tmp_path / "nul.yaml"
    path.write_bytes(b"version: 1\nname: a\x00b\n")
    message, _ = _reject(path)
    assert message == f"{path}:2:8: invalid YAML: character U+0000 is not allowed"


def test_missing_file_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    message, _ = _reject(path)
    assert message == f"{path}: cannot read: No such file or directory"
