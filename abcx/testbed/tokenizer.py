"""Character-level tokenizer for the embedded tiny model.

One token per character keeps arithmetic exact (no merges that glue digits together) and lets the
vocabulary stay tiny, so the embedding table does not dominate the model.
"""
from __future__ import annotations

import string
from pathlib import Path

PAD, EOS, BOS, UNK = "<pad>", "<eos>", "<bos>", "<unk>"
SPECIAL_TOKENS = (PAD, EOS, BOS, UNK)

# Digits and operators for the arith task; lowercase letters and a little punctuation so a short
# system prompt or a role tag can be written without <unk>.
CHARACTERS = string.digits + "+-*=" + " \n" + string.ascii_lowercase + ".,:?()"

# Renders a chat as the plain prompt the model was trained on: a user turn "47+385=" becomes exactly
# "47+385=", so conversational and plain prompts reach the same policy. A system turn is a line of
# its own; an assistant turn ends with <eos> (that is where generation stops).
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{ message['content'] }}{{ '\n' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ message['content'] }}"
    "{%- if not (continue_final_message is defined and continue_final_message and loop.last) -%}"
    "{{ eos_token }}{%- endif -%}"
    "{%- else -%}{{ message['content'] }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)


def vocabulary() -> dict[str, int]:
    """Token → id; special tokens first so their ids (pad 0, eos 1, bos 2, unk 3) never move."""
    tokens = list(SPECIAL_TOKENS) + list(CHARACTERS)
    return {tok: i for i, tok in enumerate(tokens)}


def build_tokenizer():
    """A `PreTrainedTokenizerFast` with one token per character, left padding and a chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(vocab=vocabulary(), unk_token=UNK))
    # [\s\S] rather than "." so that newline is a character like any other.
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    # Fuse joins tokens with no separator (the default decoder would put spaces between characters).
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        eos_token=EOS,
        bos_token=BOS,
        unk_token=UNK,
        padding_side="left",
        model_max_length=256,
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def save_tokenizer(folder: str | Path):
    tok = build_tokenizer()
    tok.save_pretrained(str(folder))
    return tok
