"""Tiny tokenizers made offline: byte-level BPE trained on a fixed English + synthetic-VQA corpus.

Real checkpoints bring their own tokenizer; the tiny families need one that behaves like a real BPE (whole
words with a leading space, merges that can change token boundaries) so that HotFlip's verification step is
exercised for real. Training is deterministic and takes well under a second; the result is cached per
(special tokens, vocabulary size).
"""
from __future__ import annotations

import functools
from typing import Sequence, Tuple

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from mmguard.data.synthetic import QUADRANTS, answer_vocabulary

# Common English words: questions of the paper's data sets, chat scaffolding and a pool of trigger words.
_WORDS = """
the a an of to and in is it that what which who where when why how many much there this these those are
was were be been being do does did has have had can could would should will shall may might must not no yes
on at by for from with about into over under above below between left right top bottom middle center
image picture photo shown show shows see seen look looks color colour shape size number count answer
question option letter choose select correct best describe object objects thing things person people man
woman child dog cat car bus tree house street sign text word words read written table chart graph figure
document page title name value year total percent price date time day night water sky road room wall door
window light dark big small large little tall short long wide red green blue yellow purple orange black
white gray brown pink circle square triangle rectangle line dot one two three four five six seven eight
nine ten zero first second third last next other same different more less most least all some any each
both only also very just then than here now again still even well good bad new old high low full empty
open closed hot cold wet dry fast slow hard soft heavy light near far inside outside front back side up
down off out true false maybe please tell me you your we our they their he she his her its my sure
system user assistant model image video vision patch token start end begin pad
alpha bravo delta echo golf hotel india kilo lima metro nova oscar papa quartz radio sierra tango ultra
victor whisky xray yankee zulu amber basil cedar dune ember fern grove harbor iris jade kelp lotus maple
nectar opal pearl quill raven sage thistle umber violet willow yarrow zephyr anchor beacon canyon drift
meadow pebble ripple summit tundra vapor
""".split()


def _corpus() -> list:
    words = list(dict.fromkeys(_WORDS + answer_vocabulary()))
    lines = [" ".join(words[i:i + 12]) for i in range(0, len(words), 12)]
    lines += [f" {w}" for w in words] * 3
    lines += [f"{w.capitalize()} {w}?" for w in words]
    lines += [f" {q}" for q in QUADRANTS]
    lines += ["What colour is the shape?", "How many shapes are there?", "Where is the shape?",
              "What shape is shown?", "Is there a red shape?", "Answer with the option's letter.",
              "A. B. C. D. 0 1 2 3 4 5 6 7 8 9 , . ; : ! ? ' \" ( ) - \n"]
    return lines


@functools.lru_cache(maxsize=None)
def _base_tokenizer_json(vocab_size: int) -> str:
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return tok.to_str()


def build_tiny_tokenizer(special_tokens: Sequence[str], *, vocab_size: int = 1024, pad: str, eos: str,
                         bos: str | None = None, chat_template: str | None = None,
                         extra: Tuple[Tuple[str, str], ...] = ()) -> PreTrainedTokenizerFast:
    """A fast tokenizer with the family's special tokens appended after the trained vocabulary."""
    tok = Tokenizer.from_str(_base_tokenizer_json(vocab_size))
    specials = list(dict.fromkeys([*special_tokens, pad, eos] + ([bos] if bos else [])))
    tok.add_special_tokens(specials)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=pad, eos_token=eos, bos_token=bos,
                                   clean_up_tokenization_spaces=False)
    for key, value in extra:
        setattr(fast, key, value)
    if chat_template is not None:
        fast.chat_template = chat_template
    return fast
