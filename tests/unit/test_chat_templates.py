"""Conformance: the suite's prompts through chat templates that behave like the common
families (Gemma-2, Llama-3, ChatML/Qwen, DeepSeek-V3), applied as transformers and TGI apply
them (sandboxed Jinja, raise_exception, bos_token, add_generation_prompt)."""

from __future__ import annotations

import pytest

from grm.backends.chat_template import compile_chat_template, render_chat
from grm.core.errors import ChatTemplateError
from grm.core.sampling import sample_spec
from grm.core.templates import load_templates, single_user_turn
from grm.core.types import Context, Sample
from grm.metarm.inputs import meta_messages
from tests.support.chat_templates import FAMILIES, GEMMA2

CONTEXT = Context.from_query("What is 6 * 7? Answer in \\boxed{}.")
RESPONSES = ["6 * 7 = \\boxed{42}", "#### Work\n6 * 7 = 41, so [[ 41 ]]"]


def render(family: str, messages: list[dict[str, str]], *, generation: bool = True) -> str:
    source, bos, _ = FAMILIES[family]
    return render_chat(
        compile_chat_template(source), messages, add_generation_prompt=generation, bos_token=bos
    )


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_default_prompt_renders_in_every_family(family: str) -> None:
    """One user turn: accepted everywhere, its text intact, ending in the generation cue."""
    [turn] = load_templates().joint(CONTEXT, RESPONSES, reference="42")
    text = render(family, [turn])
    assert turn["content"].strip() in text and text.count("[The Begin of Response 1]") == 1
    assert text.endswith(FAMILIES[family][2])
    for response in RESPONSES:  # the judge reads what the policy wrote
        assert f"\n{response}\n[The End of Response" in text


@pytest.mark.parametrize("family", ["llama3", "chatml", "deepseek_v3"])
def test_the_system_variant_renders_where_a_system_role_is_accepted(family: str) -> None:
    messages = load_templates("grm-default-v3-system").joint(CONTEXT, RESPONSES)
    text = render(family, messages)
    assert messages[0]["content"].strip() in text and messages[1]["content"].strip() in text


def test_gemma2_rejects_the_system_role_and_accepts_the_folded_prompt() -> None:
    messages = load_templates("grm-default-v3-system").joint(CONTEXT, RESPONSES)
    with pytest.raises(ChatTemplateError, match="System role not supported"):
        render("gemma2", messages)
    folded = render("gemma2", list(single_user_turn(messages)))
    assert folded == render("gemma2", load_templates().joint(CONTEXT, RESPONSES))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_meta_rm_input_renders_in_every_family(family: str) -> None:
    """The meta RM reads (GRM prompt as user, raw output as assistant): alternating roles, so
    every family renders it, Gemma-2's strict alternation included; the LLM meta RM's extra
    Yes/No turn keeps the alternation."""
    spec = sample_spec(0, 0, 2)
    output = "Specific Criteria: correctness.\nAnalysis: 1 is right.\nScores: \\boxed{9, 2}"
    sample = Sample(spec, output, "correctness.", "1 is right.", (9, 2))
    pair = meta_messages(load_templates(), CONTEXT, RESPONSES, sample, "42")
    text = render(family, pair, generation=False)
    assert output in text and "#### Reference Answer ####\n42" in text
    question = {"role": "user", "content": load_templates().meta_question}
    assert render(family, [*pair, question]).endswith(FAMILIES[family][2])


def test_a_template_error_names_the_template_message() -> None:
    template = compile_chat_template(GEMMA2)
    with pytest.raises(ChatTemplateError, match="roles must alternate"):
        render_chat(template, [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


def test_the_embedded_backend_folds_the_prompt_when_its_template_rejects_a_system_role(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """llama.cpp's formatter with a Gemma-2 template (as a Gemma-2 GGUF carries): the system
    variant is folded into one user turn, said once in the log."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from grm.backends.embedded import EmbeddedBackend

    backend = EmbeddedBackend()  # not started: no model is loaded for rendering
    backend._formatter = Jinja2ChatFormatter(template=GEMMA2, eos_token="<eos>", bos_token="<bos>")
    messages = load_templates("grm-default-v3-system").joint(CONTEXT, RESPONSES)
    with caplog.at_level("WARNING"):
        first = backend.render(messages)
        second = backend.render(messages)
    assert first == second and first.startswith("<bos><start_of_turn>user\nYou are a skilled")
    assert sum("one user turn" in r.getMessage() for r in caplog.records) == 1
