"""An offline byte-level BPE tokenizer for the tiny test models (model hubs are unreachable).

Digits are split one by one before byte-level BPE, so the fixed-width timestamps of the frame
wrappers ("Frame at 00:01:05: ") have the same token count whatever the time.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

# ChatML, the Qwen vision specials, and the LLaVA / Idefics3 / SmolVLM image specials. One tokenizer
# serves every family: each adapter looks its tokens up by string.
SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<image>",
    "<video>",
    "<fake_token_around_image>",
    "<global-img>",
    "<end_of_utterance>",
]

_CORPUS = [
    "You watch a video and answer questions about it.",
    "You are a helpful assistant.",
    "Frame at 00:00:00: ",
    "What is happening in the video? What color is the ball? Where is the red square?",
    "The quick brown fox jumps over the lazy dog.",
    "A person walks across the room and picks up a cup from the table.",
    "system user assistant question answer frame time second minute hour",
    "Yes. No. The answer is: left, right, top, bottom, center, red, green, blue, yellow.",
    "0123456789 : , . ? ! ( ) [ ] - + = / \n",
]

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer(vocab_size: int = 512):
    """Train a tiny byte-level BPE (deterministic for a fixed corpus) and wrap it for transformers."""
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    hf.add_special_tokens(
        {"additional_special_tokens": [s for s in SPECIALS if s not in ("<|im_end|>", "<|endoftext|>")]}
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf
