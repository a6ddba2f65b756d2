"""A tiny, randomly initialised Gemma 3 saved as a local model folder.

The folder has everything :class:`transformers.AutoProcessor` and
:class:`transformers.Gemma3ForConditionalGeneration` need (config, weights,
tokenizer, image processor, processor and chat template), so the real
``transformers`` backend, ``transformers serve`` and the benchmarks can run the
full multimodal code path on a CPU in seconds. Its text is random words: the
point is the plumbing (prompts, images, padding, 4-bit loading, decoding), not
the content.

The tokenizer is word level (built with :mod:`tokenizers`) and carries Gemma's
special tokens with Gemma's ids for ``<pad>``, ``<eos>`` and ``<bos>`` (0, 1, 2).
Every linear layer has an input size that is a multiple of 64, the block size
of the bitsandbytes CPU 4-bit kernels, so the model also loads in NF4.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

#: Gemma's special tokens, in the order that gives them their ids here.
GEMMA_SPECIAL_TOKENS: tuple[str, ...] = (
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
)

#: Ordinary words: those of the two MLLMRec prompts plus product vocabulary, so
#: that prompts tokenize to real ids and the random output reads as words.
TINY_WORDS: tuple[str, ...] = tuple(
    """
    please convert the given image into an accurate and concise textual description
    relevant to focusing on extracting key attributes that can influence buying
    behavior of users such as color material style functionality etc generate using
    one paragraph natural language overview in no more than 100 words reason about
    user preferences based following list item descriptions he or she has interacted
    with is a this that it for are was be by from at as has have soft blue red green
    yellow white black pink grey brown orange purple cotton plastic wood metal glass
    fabric rubber silicone bamboo wool leather baby toy bottle stroller blanket bib
    diaper crib seat car carrier toddler infant newborn mother parent child kids
    bath towel bowl spoon cup bag pack set piece size small large light heavy safe
    durable easy clean wash washable portable foldable comfortable gentle warm cute
    bright modern classic simple elegant sporty design pattern stripes dots animal
    bear duck star heart flower print shoe shirt dress jacket ball bike tent rope
    camping running outdoor indoor travel home sleep feeding play learning gift
    quality price value brand features includes made perfect ideal daily use prefers
    likes enjoys values practical stylish affordable premium organic natural eco
    friendly bpa free non toxic great good best new high low long short wide
    , . : ; ' " - ( ) [ ] ! ?
    """.split()
)

_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% set ns = namespace(prefix='') %}"
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set sys = messages[0]['content'] %}"
    "{% set ns.prefix = (sys if sys is string else sys[0]['text']) + '\\n\\n' %}"
    "{% set turns = messages[1:] %}"
    "{% else %}{% set turns = messages %}{% endif %}"
    "{% for message in turns %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' }}"
    "{% if loop.first %}{{ ns.prefix }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<start_of_image>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] | trim }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)

_MARKER = "tiny_gemma.json"


@dataclass(frozen=True)
class TinyGemmaConfig:
    """Sizes of the tiny model.

    Args:
        hidden_size: text hidden size (a multiple of 64).
        intermediate_size: text MLP size (a multiple of 64).
        num_hidden_layers: text decoder layers.
        num_attention_heads: query heads; ``num_attention_heads * head_dim``
            must be a multiple of 64 (the input of ``o_proj``).
        num_key_value_heads: key/value heads.
        head_dim: size of one attention head.
        vision_hidden_size: SigLIP hidden size (a multiple of 64).
        vision_intermediate_size: SigLIP MLP size (a multiple of 64).
        vision_layers: SigLIP encoder layers.
        vision_heads: SigLIP attention heads.
        image_size: square input resolution of the vision tower.
        patch_size: SigLIP patch size.
        mm_tokens_per_image: soft tokens per image (a square number whose side
            divides ``image_size // patch_size``).
        init_std: standard deviation of the random weights (Gemma's 0.02);
            the image projection, zero in Gemma's init, is drawn with it too.
        seed: torch seed for the weights; the same config gives the same model.
    """

    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    num_key_value_heads: int = 1
    head_dim: int = 32
    vision_hidden_size: int = 64
    vision_intermediate_size: int = 128
    vision_layers: int = 1
    vision_heads: int = 2
    image_size: int = 64
    patch_size: int = 16
    mm_tokens_per_image: int = 4
    init_std: float = 0.02
    seed: int = 0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first size that breaks a constraint."""
        for name in (
            "hidden_size",
            "intermediate_size",
            "vision_hidden_size",
            "vision_intermediate_size",
        ):
            value = getattr(self, name)
            if value < 64 or value % 64:
                raise ValueError(
                    f"TinyGemmaConfig.{name}={value}: must be a positive multiple of 64 "
                    "(bitsandbytes' CPU 4-bit block size)"
                )
        if (self.num_attention_heads * self.head_dim) % 64:
            raise ValueError(
                "TinyGemmaConfig: num_attention_heads * head_dim = "
                f"{self.num_attention_heads * self.head_dim} must be a multiple of 64"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("TinyGemmaConfig: num_attention_heads % num_key_value_heads != 0")
        patches = self.image_size // self.patch_size
        side = round(self.mm_tokens_per_image**0.5)
        if side * side != self.mm_tokens_per_image or patches % side:
            raise ValueError(
                f"TinyGemmaConfig: mm_tokens_per_image={self.mm_tokens_per_image} must be a "
                f"square whose side divides image_size // patch_size = {patches}"
            )


def _build_tokenizer(padding_side: str = "left"):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for token in GEMMA_SPECIAL_TOKENS + TINY_WORDS:
        vocab.setdefault(token, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
            "sot_token": "<start_of_turn>",
            "eot_token": "<end_of_turn>",
        },
        padding_side=padding_side,
    )


def _write_model(folder: Path, cfg: TinyGemmaConfig) -> None:
    import torch
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3Processor,
        Gemma3TextConfig,
        GenerationConfig,
        SiglipVisionConfig,
    )

    try:  # transformers >= 5 splits the Pillow and torchvision image processors
        from transformers.models.gemma3.image_processing_pil_gemma3 import (
            Gemma3ImageProcessorPil as ImageProcessor,
        )
    except ImportError:
        from transformers import Gemma3ImageProcessor as ImageProcessor

    tokenizer = _build_tokenizer()
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in GEMMA_SPECIAL_TOKENS}
    text_config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        head_dim=cfg.head_dim,
        query_pre_attn_scalar=cfg.head_dim,
        sliding_window=64,
        max_position_embeddings=2048,
        initializer_range=cfg.init_std,
        pad_token_id=ids["<pad>"],
        bos_token_id=ids["<bos>"],
        eos_token_id=[ids["<eos>"], ids["<end_of_turn>"]],
    )
    vision_config = SiglipVisionConfig(
        hidden_size=cfg.vision_hidden_size,
        intermediate_size=cfg.vision_intermediate_size,
        num_hidden_layers=cfg.vision_layers,
        num_attention_heads=cfg.vision_heads,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        vision_use_head=False,
    )
    config = Gemma3Config(
        text_config=text_config,
        vision_config=vision_config,
        mm_tokens_per_image=cfg.mm_tokens_per_image,
        boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"],
        image_token_index=ids["<image_soft_token>"],
        initializer_range=cfg.init_std,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = Gemma3ForConditionalGeneration(config)
        # Gemma initialises the image projection to zero, which would make the
        # output blind to the image; a random projection lets images matter.
        projector = model.model.multi_modal_projector
        torch.nn.init.normal_(projector.mm_input_projection_weight, std=cfg.init_std)
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<bos>"],
        pad_token_id=ids["<pad>"],
        eos_token_id=[ids["<eos>"], ids["<end_of_turn>"]],
    )
    model.save_pretrained(folder)

    image_processor = ImageProcessor(
        size={"height": cfg.image_size, "width": cfg.image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=_CHAT_TEMPLATE,
        image_seq_length=cfg.mm_tokens_per_image,
    )
    processor.save_pretrained(folder)


def build_tiny_gemma(
    folder: str | os.PathLike[str],
    config: TinyGemmaConfig | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Build (once) a tiny random Gemma 3 model folder and return its path.

    The folder is written to a temporary sibling and moved into place, so a
    half-written model is never seen. A folder already built from the same
    config is reused unless ``overwrite`` is set.

    Args:
        folder: where the model lives.
        config: model sizes; :class:`TinyGemmaConfig` defaults when ``None``.
        overwrite: rebuild even when a matching model is already there.

    Returns:
        The model folder, loadable with ``AutoProcessor.from_pretrained`` and
        ``Gemma3ForConditionalGeneration.from_pretrained``.
    """
    cfg = config or TinyGemmaConfig()
    cfg.validate()
    folder = Path(folder)
    wanted = {"tiny_gemma": asdict(cfg)}
    marker = folder / _MARKER
    if marker.is_file() and not overwrite:
        try:
            if json.loads(marker.read_text()) == wanted:
                logger.debug("tiny Gemma 3 already built in %s", folder)
                return folder
        except json.JSONDecodeError:
            pass
    if folder.exists() and any(folder.iterdir()) and not marker.is_file():
        raise FileExistsError(
            f"{folder} exists, is not empty and holds no tiny Gemma model; refusing to replace it"
        )

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        _write_model(staging, cfg)
        (staging / _MARKER).write_text(json.dumps(wanted, indent=2, sort_keys=True))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("built a tiny Gemma 3 in %s", folder)
    return folder
