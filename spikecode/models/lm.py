"""What spikecode's causal language models share with transformers (SPEC §7, §8).

:class:`CausalLMBase` is the transformers ``PreTrainedModel`` + ``GenerationMixin`` part
of :class:`~spikecode.models.gla_swa.GLASwaForCausalLM` and
:class:`~spikecode.models.hybrid_moe.SpikingBrainMoEForCausalLM`: the cache argument
(either name), the causal-LM loss, the output object, and ``generate()`` with
right-padded prompts moved to the left. A subclass has ``model`` (whose forward takes
``input_ids, attention_mask, cache, position_ids, inputs_embeds``), ``lm_head``, the
cache class it decodes with and the name of its typed architecture attribute.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from spikecode.errors import SpikecodeError
from spikecode.models.inputs import causal_lm_loss, left_align

__all__ = ["CausalLMBase"]


class CausalLMBase(PreTrainedModel, GenerationMixin):
    """The transformers side of spikecode's causal LMs (see the module docstring)."""

    base_model_prefix = "model"
    main_input_name = "input_ids"
    #: The cache this model decodes with: a ``transformers.Cache`` built from the typed
    #: architecture, the attribute named by ``architecture_attr``.
    cache_class: ClassVar[type[Any]]
    #: Name of the attribute holding the typed architecture (``gla_config``, ...).
    architecture_attr: ClassVar[str]

    def _init_weights(self, module: nn.Module) -> None:
        # Modules keep PyTorch's default initialisation; checkpoints overwrite it.
        return

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # generate() must not build a DynamicCache: forward creates the model's own cache.
        return False

    def get_input_embeddings(self) -> nn.Module:
        """The token embeddings."""
        return self.model.embeddings

    def get_output_embeddings(self) -> nn.Module:
        """The LM head."""
        return self.lm_head

    def _lm_forward(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        past_key_values: Any,
        labels: torch.Tensor | None,
        use_cache: bool | None,
        return_dict: bool | None,
        cache: Any,
        extra: dict[str, Any],
    ) -> CausalLMOutputWithPast | tuple[Any, ...]:
        """The body of ``forward``: check, run ``model`` and ``lm_head``, build the output."""
        name = type(self).__name__
        for key, value in extra.items():
            if key not in ("cache_position", "output_attentions", "output_hidden_states"):
                raise SpikecodeError(f"{name}.forward got an unknown argument {key!r}")
            if key != "cache_position" and value:
                raise SpikecodeError(f"{name} does not support {key}=True")
        if cache is not None and past_key_values is not None:
            raise SpikecodeError("pass the cache as cache or past_key_values, not both")
        cache = cache if cache is not None else past_key_values
        if cache is not None and not isinstance(cache, self.cache_class):
            raise SpikecodeError(
                f"the cache must be a {self.cache_class.__name__}, not {type(cache).__name__}"
            )
        if cache is None and use_cache:
            cache = self.cache_class(getattr(self, self.architecture_attr))
        hidden = self.model(input_ids, attention_mask, cache, position_ids, inputs_embeds)
        logits = self.lm_head(hidden)
        loss = None if labels is None else causal_lm_loss(logits, labels)
        if return_dict is False:
            return tuple(item for item in (loss, logits, cache) if item is not None)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """Run transformers' ``generate()``, right-padded prompts moved to the left first.

        New tokens follow the last column, so a right-padded row (the Qwen2 tokenizer's
        default padding side) would put padding inside the sequence. Such rows are
        shifted to left padding first (:func:`~spikecode.models.inputs.left_align`); the
        returned rows then hold the prompt left-padded, followed by the new tokens.
        Positions come from the mask (``position_ids``), so each row gets what the same
        prompt gives alone.
        """
        key = next((k for k in ("input_ids", "inputs") if k in kwargs), None)
        ids = kwargs[key] if key is not None else (args[0] if args else None)
        mask = kwargs.get("attention_mask")
        if (
            isinstance(ids, torch.Tensor)
            and ids.dim() == 2
            and isinstance(mask, torch.Tensor)
            and mask.shape == ids.shape
        ):
            ids, mask = left_align(ids, mask)
            kwargs["attention_mask"] = mask
            if key is not None:
                kwargs[key] = ids
            else:
                args = (ids, *args[1:])
        return super().generate(*args, **kwargs)
