"""Where decoding defaults live, and the flags that choose them: the aggregator's --decoding,
the backend services' own profile, `grm score`, `grm spct-data --help` and `grm dev-tgi`."""

from __future__ import annotations

import argparse

import pytest

from grm.core.decoding import EMBEDDED, SERVED, parse_profile, profile_for_backend
from grm.core.types import SamplingParams


def aggregator_settings(*argv: str, environ: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    from grm.services.aggregator import main as agg

    parser = argparse.ArgumentParser()
    agg.add_arguments(parser)
    return agg.build_settings(parser.parse_args(["--samplers", "a:1", *argv]), environ or {})


def test_the_profiles() -> None:
    assert SamplingParams() == SamplingParams(0.5, 1.0, 1024, grammar=False, force_scores=False)
    assert (profile_for_backend("tgi"), profile_for_backend("openai")) == (SERVED, SERVED)
    assert profile_for_backend("embedded") == EMBEDDED
    with pytest.raises(ValueError, match="decoding profile"):
        parse_profile("fast")


def test_the_aggregator_fills_unset_fields_from_its_decoding_profile() -> None:
    served = aggregator_settings().defaults.sampling
    assert (served.max_new_tokens, served.grammar, served.force_scores) == (1024, False, False)
    embedded = aggregator_settings(environ={"GRM_DECODING": "embedded"}).defaults.sampling
    assert (embedded.max_new_tokens, embedded.grammar, embedded.force_scores) == (256, True, True)
    tuned = aggregator_settings("--decoding", "served", "--default-max-new-tokens", "2048")
    assert tuned.defaults.sampling.max_new_tokens == 2048 and tuned.defaults.k == 4
    assert aggregator_settings("--default-temperature", "0.7").defaults.sampling.temperature == 0.7


def test_labels_as_reference_and_the_meta_rm_chat_template_are_flags() -> None:
    built = aggregator_settings(
        "--http-port", "5000", "--http-labels-as-reference", "true",
        "--meta-rm", "http", "--meta-rm-url", "http://rm:8000/predict",
        "--meta-rm-chat-template", "rm.jinja",
    )  # fmt: skip
    assert built.http is not None and built.http.labels_as_reference
    assert built.meta_rm_chat_template == "rm.jinja"


def test_backend_services_use_their_own_backends_profile() -> None:
    from grm.rpc.server import ServerSettings
    from grm.services.bootstrap import BackendServiceSettings, BackendSettings

    tgi = BackendServiceSettings(server=ServerSettings(), backend=BackendSettings(backend="tgi"))
    assert tgi.defaults.sampling == SamplingParams()
    embedded = BackendServiceSettings(server=ServerSettings())
    assert embedded.defaults.sampling.grammar and embedded.defaults.sampling.force_scores


def test_grm_score_flags() -> None:
    from grm.cli import main as cli

    parser = cli.build_parser()
    args = parser.parse_args(["score", "f.jsonl", "--no-grammar", "--force-scores", "--k", "2"])
    assert cli._flag_fields(args) == {"k": 2, "grammar": False, "force_scores": True}
    local = cli._item_builder(parser.parse_args(["score", "f.jsonl"]))
    item = local(query="q", responses=["a"])
    assert item.sampling.max_new_tokens == 256 and item.sampling.grammar  # embedded in process
    remote = cli._request_builder(parser.parse_args(["score", "f.jsonl", "--target", "h:1"]))
    request = remote({"query": "q", "turns": [], "responses": ["a"], "reference": "42"})
    assert request.reference == "42"
    assert not request.sampling.HasField("max_new_tokens")  # the server's profile decides
    assert not request.HasField("k")


def test_spct_data_help_names_the_files_it_writes(capsys: pytest.CaptureFixture[str]) -> None:
    from grm.cli import main as cli

    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["spct-data", "--help"])
    text = capsys.readouterr().out
    for name in ("rft.jsonl", "meta_rm.jsonl", "items.jsonl", "summary.json"):
        assert name in text


def test_dev_tgi_serves_a_given_chat_template() -> None:
    from grm_dev.devtgi.main import add_arguments, build_settings

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    settings = build_settings(
        parser.parse_args(["--scripted", "--chat-template", "t.jinja", "--bos-token", "<bos>"])
    )
    assert settings.chat_template == "t.jinja" and settings.bos_token == "<bos>"
