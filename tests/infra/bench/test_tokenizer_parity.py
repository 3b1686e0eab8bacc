"""The compiled hot modules against their pure-Python reference (``infra.bench.tokenizer``):
one generated stream gives the same rows, tokens and dead letters at every poll, byte for
byte, and a snapshot taken on either path resumes on the other."""

from __future__ import annotations

import pytest

from infra.bench.tokenizer import StreamSpec, first_difference, replay, run_child
from streams import compiled

pytestmark = pytest.mark.skipif(
    not all(compiled.loaded_paths().values()),
    reason=f"the hot modules do not run compiled here: {compiled.describe()}")

SPEC = StreamSpec(events=12_000, users=200, poll=500, snapshot_every=4)
AT = 8  # the poll after which a state is handed to the other path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parity")
    fast = replay(SPEC, state_at=AT, state_out=tmp / "compiled.state")  # this process
    pure = run_child(SPEC, pure=True, state_at=AT, state_out=tmp / "pure.state")
    return {"fast": fast, "pure": pure,
            "pure_after_fast": run_child(SPEC, pure=True, state_in=tmp / "compiled.state"),
            "fast_after_pure": replay(SPEC, state_in=tmp / "pure.state")}


def test_both_paths_give_the_same_output_at_every_poll(runs):
    fast, pure = runs["fast"], runs["pure"]
    assert fast["compiled"] and fast["path"].startswith("compiled")
    assert not pure["compiled"] and pure["path"] == f"pure Python ({compiled.PURE_ENV} is set)"
    assert pure["stream_sha256"] == fast["stream_sha256"]
    assert first_difference(fast["digests"], pure["digests"]) is None
    assert fast["counts"] == pure["counts"]


def test_the_stream_holds_every_case_the_tokenizer_decides(runs):
    counts = runs["fast"]["counts"]
    for reason in ("duplicate", "late", "future", "wrong_key", "invalid_action",
                   "invalid_event"):
        assert counts.get(f"dead:{reason}", 0) > 0, (reason, counts)
    assert counts["merged_tokens"] > 0 and counts["rows"] > 0 and counts["item_rows"] > 0
    assert runs["fast"]["restores"] == len(runs["fast"]["digests"]) // SPEC.snapshot_every


@pytest.mark.parametrize(("resumed", "path"), [("pure_after_fast", False),
                                               ("fast_after_pure", True)])
def test_a_snapshot_of_one_path_resumes_on_the_other(runs, resumed, path):
    rest = runs[resumed]
    assert rest["compiled"] is path and rest["start_poll"] == AT
    assert rest["digests"] == runs["fast"]["digests"][AT:]
