"""Text that cannot be encoded as UTF-8 at every entry point (a property-based test).

A lone surrogate such as "\\udcff" is a valid Python string and valid JSON ("\\udcff"), but no
UTF-8 byte sequence: protobuf, JSON output and every engine refuse it. Every door — the SDK's
`score` (blocking and asyncio) and `score_many`, `grm score FILE --target`, `POST /get_reward`,
the TRL and verl adapters — must turn it into INVALID_ARGUMENT / HTTP 400 naming the field,
score the rest, and never crash. Hypothesis draws the strings; one suite (real servers on
loopback, scripted model) runs in a thread of its own for the whole module, so the blocking
entry points can be driven from the property functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grm.cli import main as cli
from grm.client import NO_RETRY, AsyncGrmClient, GrmClient
from grm.core.errors import InvalidArgumentError
from grm.integrations import verl
from grm.integrations.trl import grm_reward_func
from grm.services.aggregator.http_rm import HttpRmSettings
from tests.support.servers import running_suite

# Text around one or more lone surrogates (category Cs: U+D800..U+DFFF). A high surrogate
# right before a low one is left out: JSON reads that pair as one valid character.
_plain = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
_surrogate = st.characters(categories=["Cs"])
_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")
unencodable = st.builds(
    lambda a, s, b, more: a + s + b + "".join(more),
    _plain,
    _surrogate,
    _plain,
    st.lists(_surrogate, max_size=2),
).filter(lambda text: not _PAIR.search(text))
PROPERTY = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
GOOD = ["a bad answer", "a good answer"]


class SuiteThread:
    """The suite on an event loop in a background thread (started once for the module)."""

    def __init__(self) -> None:
        self.address = ""
        self.http_port = 0
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the test thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        http = HttpRmSettings(port=0, group=True, k=1)
        async with running_suite(http=http) as suite:
            assert suite.aggregator.http is not None
            self.address, self.http_port = suite.address, suite.aggregator.http.port or 0
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> SuiteThread:
        self._thread.start()
        assert self._ready.wait(60), "the suite did not start"
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture(scope="module")
def suite() -> Iterator[SuiteThread]:
    with SuiteThread() as running:
        yield running


@pytest.fixture(scope="module")
def client(suite: SuiteThread) -> Iterator[GrmClient]:
    with GrmClient(suite.address, timeout=20, retry=NO_RETRY) as c:
        yield c


@PROPERTY
@given(bad=unencodable, where=st.sampled_from(["query", "responses[1]", "principles"]))
def test_sdk_score_names_the_field(client: GrmClient, bad: str, where: str) -> None:
    fields: dict[str, Any] = {"query": "q", "responses": list(GOOD)}
    if where == "query":
        fields["query"] = bad
    elif where == "principles":
        fields["principles"] = bad
    else:
        fields["responses"][1] = bad
    with pytest.raises(InvalidArgumentError) as caught:
        client.score(fields.pop("query"), fields.pop("responses"), k=1, **fields)
    assert caught.value.field == where


@PROPERTY
@given(bad=unencodable)
def test_async_sdk_score_and_chat_turns_name_the_field(suite: SuiteThread, bad: str) -> None:
    async def run() -> tuple[str | None, str | None]:
        async with AsyncGrmClient(suite.address, timeout=20, retry=NO_RETRY) as c:
            with pytest.raises(InvalidArgumentError) as one:
                await c.score("q", [bad], k=1)
            turns = [{"role": "user", "content": "hi"}, {"role": "user", "content": bad}]
            with pytest.raises(InvalidArgumentError) as two:
                await c.score(turns, GOOD, k=1)
        return one.value.field, two.value.field

    assert asyncio.run(run()) == ("responses[0]", "turns[1].content")


@PROPERTY
@given(bad=unencodable)
def test_score_many_reports_the_item_and_scores_the_rest(client: GrmClient, bad: str) -> None:
    items = [
        {"query": "q", "responses": GOOD, "k": 1},
        {"query": "q", "responses": ["fine", bad], "k": 1},
        {"query": "q", "responses": list(reversed(GOOD)), "k": 1},
    ]
    [first, broken, last] = client.score_many(items)
    assert first.rewards == (2.0, 9.0) and last.rewards == (9.0, 2.0)
    assert broken.status == "INVALID_ARGUMENT"
    assert broken.error is not None and broken.error.field == "items[1].responses[1]"
    outcomes = client.score_batch(items)  # one call: the same, item by item
    assert isinstance(outcomes[1], InvalidArgumentError)
    assert outcomes[0].rewards == (2.0, 9.0)  # type: ignore[union-attr]


@PROPERTY
@given(bad=unencodable)
def test_get_reward_answers_400_naming_the_field(suite: SuiteThread, bad: str) -> None:
    body = {"query": ["Q a good answer", "Q" + bad], "prompts": ["Q", "Q"]}
    data = json.dumps(body).encode("ascii")  # json escapes the surrogate: valid JSON
    request = urllib.request.Request(
        f"http://127.0.0.1:{suite.http_port}/get_reward",
        data=data,
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=20)
    assert caught.value.code == 400
    assert "query[1]" in json.loads(caught.value.read())["error"]


@PROPERTY
@given(bad=unencodable, conversational=st.booleans())
def test_trl_gives_none_for_that_completion_only(
    suite: SuiteThread, bad: str, conversational: bool
) -> None:
    reward = grm_reward_func(suite.address, group=False, k=1, timeout=20)
    try:
        completions: list[Any] = ["a good answer", bad, "a bad answer"]
        if conversational:
            completions = [[{"role": "assistant", "content": c}] for c in completions]
        assert reward(prompts=["q"] * 3, completions=completions) == [9.0, None, 2.0]
        assert reward(prompts=["q", bad], completions=["a good answer"] * 2) == [9.0, None]
    finally:
        reward.close()  # type: ignore[attr-defined]


@PROPERTY
@given(bad=unencodable)
def test_verl_raises_its_error_naming_the_field(suite: SuiteThread, bad: str) -> None:
    verl.configure(suite.address, k=1, timeout=20)
    try:
        with pytest.raises(verl.GrmRewardError, match=r"responses\[0\]"):
            verl.compute_score("src", bad, None, extra_info={"question": "q"})
        with pytest.raises(verl.GrmRewardError, match="query"):
            verl.compute_score("src", "an answer", None, extra_info={"question": bad})
        with pytest.raises(verl.GrmRewardError, match="1 of 2"):
            verl.compute_score_batch(
                ["a", "b"], ["ok", "x"], [None] * 2, [{"question": bad}, {"question": "q"}]
            )
    finally:
        verl.configure(None)


@PROPERTY
@given(bad=unencodable, field=st.sampled_from(["query", "responses", "id"]))
def test_grm_score_file_gives_that_line_an_error_and_scores_the_next(
    suite: SuiteThread, tmp_path_factory: pytest.TempPathFactory, bad: str, field: str
) -> None:
    tmp = tmp_path_factory.mktemp("scorefile")
    broken: dict[str, Any] = {"id": "b", "query": "q", "responses": GOOD}
    broken[field] = [GOOD[0], bad] if field == "responses" else bad
    lines = [
        {"id": "a", "query": "q", "responses": GOOD},
        broken,
        {"id": "c", "query": "q", "responses": list(reversed(GOOD))},
    ]
    items = tmp / "items.jsonl"
    items.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="ascii")
    out = tmp / "out.jsonl"
    argv = ["score", str(items), "--target", suite.address, "--k", "1", "--quiet", "-o", str(out)]
    with contextlib.suppress(SystemExit):
        cli.main(argv)
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert records[0]["rewards"] == [2.0, 9.0] and records[2]["rewards"] == [9.0, 2.0]
    if field == "id":  # only echoed, never scored: the line scores, its id written escaped
        assert records[1]["rewards"] == [2.0, 9.0] and records[1]["id"] == bad
    else:
        error = records[1]["error"]
        assert error["code"] == "INVALID_ARGUMENT" and records[1]["line"] == 2
        assert error["field"] == ("responses[1]" if field == "responses" else "query")


def test_the_scorefile_output_is_utf8_even_for_such_ids(tmp_path: Path) -> None:
    """A record whose id holds a lone surrogate is written with JSON escapes, not dropped."""
    from grm.cli.scorefile import encode_record

    line = encode_record({"id": "x\udcff", "rewards": [1.0]})
    assert line.encode("utf-8") and json.loads(line)["id"] == "x\udcff"
