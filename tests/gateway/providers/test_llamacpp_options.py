"""``[models.X] options`` of a llama.cpp model reach ``Llama(...)``; an unknown one is refused by name."""

from __future__ import annotations

import pytest

from trellis.gateway.errors import ProviderRejected
from trellis.gateway.providers.llamacpp import SMOLLM2, _Pool, model_path
from trellis.settings import ModelConfig


def local_model(**options: object) -> ModelConfig:
    return ModelConfig(provider="llamacpp", model_id=SMOLLM2, context_window=512, max_output_tokens=64, options=options)


def test_chat_format_and_threads_reach_llama() -> None:
    model = local_model(chat_format="gemma", n_threads=1)
    llama = _Pool(model_path(model), model, 1)._load()
    try:
        assert llama.chat_format == "gemma"
        assert llama.n_threads == 1
        assert llama.context_params.n_ctx == 512
    finally:
        llama.close()


def test_without_options_the_file_decides_the_chat_format() -> None:
    model = local_model()
    llama = _Pool(model_path(model), model, 1)._load()
    try:
        assert llama.chat_format != "gemma"
    finally:
        llama.close()


def test_an_unknown_option_is_refused_by_name() -> None:
    model = local_model(n_thread=2)
    with pytest.raises(ProviderRejected, match=r"unknown llama\.cpp option\(s\) n_thread: known are chat_format"):
        _Pool(model_path(model), model, 1)._load()
