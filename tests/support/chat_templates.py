"""Chat templates that behave like those of the model families a GRM is served with.

Each is written here to reproduce the behaviour that matters to the suite — written for these
tests, not copied — and is applied the way transformers and TGI apply chat templates (a
sandboxed Jinja environment, `raise_exception`, `bos_token`, `add_generation_prompt`):

- GEMMA2: no system role (raises "System role not supported", as Gemma-2 and hence
  DeepSeek-GRM-27B do), strictly alternating user/model turns, `<start_of_turn>` markers,
  content trimmed.
- LLAMA3: `<|start_header_id|>role<|end_header_id|>` headers, `<|eot_id|>`, bos first.
- CHATML: Qwen's ChatML, which adds a default system turn when none is given.
- DEEPSEEK_V3: the system text first, then `<｜User｜>` / `<｜Assistant｜>` turns.
"""

from __future__ import annotations

GEMMA2 = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

LLAMA3 = (
    "{% for message in messages %}"
    "{% set turn = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set turn = bos_token + turn %}{% endif %}"
    "{{ turn }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)

CHATML = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

DEEPSEEK_V3 = (
    "{{ bos_token }}"
    "{% set ns = namespace(system='') %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% set ns.system = message['content'] %}{% endif %}"
    "{% endfor %}"
    "{{ ns.system }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<｜User｜>' + message['content'] }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<｜Assistant｜>' + message['content'] + '<｜end▁of▁sentence｜>' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<｜Assistant｜>' }}{% endif %}"
)

# family -> (template, bos_token, the generation cue the rendered prompt ends with)
FAMILIES = {
    "gemma2": (GEMMA2, "<bos>", "<start_of_turn>model\n"),
    "llama3": (LLAMA3, "<|begin_of_text|>", "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    "chatml": (CHATML, "", "<|im_start|>assistant\n"),
    "deepseek_v3": (DEEPSEEK_V3, "<｜begin▁of▁sentence｜>", "<｜Assistant｜>"),
}
