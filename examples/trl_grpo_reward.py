"""TRL GRPO reward function: call it the way GRPOTrainer does, on a toy batch.

    grm up                            # in another terminal
    python examples/trl_grpo_reward.py [127.0.0.1:50051]

With TRL: `GRPOTrainer(model=..., reward_funcs=[grm_reward_func("host:50051")], ...)`.
TRL itself is not needed to run this.
"""

import sys

from grm.integrations.trl import grm_reward_func

target = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"
reward = grm_reward_func(target, group_size=4, k=2)

# GRPOTrainer repeats each prompt once per generation (num_generations=2 here).
prompts = ["What is 2 + 2?", "What is 2 + 2?", "Name a prime number.", "Name a prime number."]
completions = ["2 + 2 = 4.", "It is 5.", "7 is prime.", "9 is prime."]
rewards = reward(prompts=prompts, completions=completions)
for p, c, r in zip(prompts, completions, rewards, strict=True):
    print(f"{r!s:>6}  {p!r} -> {c!r}")  # None = not scored (TRL ignores it)

# Conversational datasets: lists of {"role", "content"}.
conv = [{"role": "user", "content": "Say hello politely."}]
print(
    reward(
        prompts=[conv, conv],
        completions=[
            [{"role": "assistant", "content": "Hello! How can I help you today?"}],
            [{"role": "assistant", "content": "what"}],
        ],
    )
)
reward.close()
