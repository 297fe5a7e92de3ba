"""Data: the Sample type, loaders (registered in ``DATASETS`` on import), synthetic VQA, the pre-pass that
refuses unusable data before any work, and export."""
from mmguard.data.errors import DataFormatError, Origin  # noqa: F401
from mmguard.data.images import ImageError, read_image  # noqa: F401
from mmguard.data.sample import Sample, option_letter, pil_to_tensor, tensor_to_pil  # noqa: F401
from mmguard.data import synthetic  # noqa: F401
from mmguard.data.loaders import (  # noqa: F401
    load_jsonl, load_llava_json, load_sharegpt, load_synthetic, read_conversation_file,
    read_jsonl, split_train_test,
)
from mmguard.data.hub import HUB_SPECS, HubDataError, load_hf_split, load_hub  # noqa: F401
from mmguard.data.export import export_llava_json, export_sharegpt  # noqa: F401
from mmguard.data.checks import check_splits  # noqa: F401
