"""The real SmolLM2-135M-Instruct loads offline and answers a text question sensibly."""

import torch


@torch.inference_mode()
def test_real_smollm2_answers_capital_of_france(default_adapter):
    a = default_adapter
    assert a.n_layers == 30 and a.model.config.hidden_size == 576  # the real checkpoint, not a tiny one
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = a.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = a.model.generate(**ids, max_new_tokens=12, do_sample=False)
    text = a.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in text
