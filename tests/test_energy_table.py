"""Energy tables: the shipped Horowitz table, custom tables, and every bad input."""

import json
import math

import pytest

from spikecode.energy import (
    DEFAULT_TABLE,
    EnergyTable,
    available_tables,
    load_table,
    mac_energy,
)
from spikecode.errors import SpikecodeError

HOROWITZ_OPS = {
    "int8_add": 0.03,
    "int8_mult": 0.2,
    "int32_add": 0.1,
    "int32_mult": 3.1,
    "fp16_add": 0.4,
    "fp16_mult": 1.1,
    "fp32_add": 0.9,
    "fp32_mult": 3.7,
}


def minimal_table(**overrides):
    table = {
        "name": "tiny",
        "unit": "pJ",
        "operations": {
            "int8_add": 1.0,
            "int8_mult": 2.0,
            "fp16_add": 3.0,
            "fp16_mult": 4.0,
            "fp32_add": 5.0,
            "fp32_mult": 6.0,
        },
        "memory": {"access_bits": 32, "default_level": "sram", "levels": {"sram": 7.0}},
    }
    table.update(overrides)
    return table


def write_json(tmp_path, data, name="table.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_default_table_is_horowitz_45nm_with_its_source():
    table = load_table()
    assert table.name == DEFAULT_TABLE == "horowitz-45nm"
    assert dict(table.operations) == HOROWITZ_OPS
    assert dict(table.memory_levels) == {
        "sram_8kb": 10.0,
        "sram_32kb": 20.0,
        "sram_1mb": 100.0,
        "dram": 1300.0,
        "dram_high": 2600.0,
    }
    assert table.access_bits == 64
    assert table.default_memory == "dram"
    assert table.access_pj() == 1300.0
    assert table.source["doi"] == "10.1109/ISSCC.2014.6757323"
    assert "Horowitz" in table.source["citation"]
    assert any("1.3-2.6 nJ" in note for note in table.notes)
    assert table.origin.endswith("horowitz-45nm.json")


def test_mac_is_mult_plus_add():
    table = load_table()
    assert table.mac_pj("fp16") == pytest.approx(1.5)
    assert table.mac_pj("int8") == pytest.approx(0.23)
    assert table.mac_pj("fp32") == pytest.approx(4.6)
    assert table.add_pj("int8") == 0.03


def test_available_tables_lists_the_shipped_files():
    assert DEFAULT_TABLE in available_tables()
    for name in available_tables():
        assert load_table(name).name == name


def test_load_by_name_path_dict_and_table_agree(tmp_path):
    by_name = load_table("horowitz-45nm")
    path = write_json(tmp_path, by_name.to_dict())
    assert load_table(path) == by_name
    assert load_table(str(path)) == by_name
    assert load_table(by_name.to_dict()) == by_name
    assert load_table(by_name) is by_name


def test_custom_table_from_tmp_json_changes_the_energies(tmp_path):
    path = write_json(tmp_path, minimal_table(), name="tiny-node.json")
    table = load_table(path)
    assert table.name == "tiny"
    assert table.origin == str(path)
    assert table.access_bits == 32
    assert table.access_pj() == 7.0
    result = mac_energy(2.0, table=path)
    assert result["spike_mac_pj"] == 2.0
    assert result["int8_mac_pj"] == 3.0
    assert result["fp16_mac_pj"] == 7.0
    assert result["reduction_vs_int8"] == pytest.approx(1 / 3)


def test_name_defaults_to_file_stem(tmp_path):
    data = minimal_table()
    del data["name"]
    assert load_table(write_json(tmp_path, data, name="my-node.json")).name == "my-node"
    assert load_table(data).name == "custom"


@pytest.mark.parametrize(("unit", "scale"), [("fJ", 1e-3), ("pJ", 1.0), ("nJ", 1e3), ("J", 1e12)])
def test_units_are_converted_to_pj(unit, scale):
    table = load_table(minimal_table(unit=unit))
    assert table.op_pj("fp32_mult") == pytest.approx(6.0 * scale)
    assert table.access_pj("sram") == pytest.approx(7.0 * scale)


def test_table_without_memory_refuses_memory_queries():
    data = minimal_table()
    del data["memory"]
    table = load_table(data)
    assert dict(table.memory_levels) == {}
    with pytest.raises(SpikecodeError, match="no default memory level"):
        table.access_pj()
    with pytest.raises(SpikecodeError, match="no memory level 'dram'"):
        table.access_pj("dram")


def test_extra_operations_are_kept_and_unknown_ones_refused_by_name():
    table = load_table(minimal_table())
    with pytest.raises(SpikecodeError, match="no operation 'int4_add'") as info:
        table.op_pj("int4_add")
    assert info.value.context["field"] == "operations.int4_add"
    data = minimal_table()
    data["operations"]["int32_add"] = 0.5
    assert load_table(data).op_pj("int32_add") == 0.5


def test_table_is_immutable():
    table = load_table()
    with pytest.raises(TypeError):
        table.operations["int8_add"] = 0.0  # type: ignore[index]


# --- bad input: every failure names the file and the field -----------------------------


def bad_operations(value):
    data = minimal_table()
    data["operations"]["int8_add"] = value
    return data


BAD_TABLES = [
    pytest.param(
        {k: v for k, v in minimal_table().items() if k != "operations"},
        "operations",
        "lacks the field 'operations'",
        id="no-operations",
    ),
    pytest.param(
        minimal_table(operations={"int8_add": 1.0}),
        "operations.int8_mult",
        "lacks the operation",
        id="missing-operation",
    ),
    pytest.param(bad_operations(-0.1), "operations.int8_add", "finite energy >= 0", id="negative"),
    pytest.param(bad_operations(math.nan), "operations.int8_add", "finite", id="nan"),
    pytest.param(bad_operations(math.inf), "operations.int8_add", "finite", id="inf"),
    pytest.param(bad_operations("0.03"), "operations.int8_add", "must be a number", id="string"),
    pytest.param(bad_operations(True), "operations.int8_add", "must be a number", id="bool"),
    pytest.param(bad_operations(None), "operations.int8_add", "must be a number", id="null"),
    pytest.param(bad_operations(10**400), "operations.int8_add", "finite", id="overflow"),
    pytest.param(minimal_table(unit="kWh"), "unit", "unknown unit", id="unknown-unit"),
    pytest.param(minimal_table(unit=3), "unit", "unknown unit", id="unit-not-string"),
    pytest.param(
        {k: v for k, v in minimal_table().items() if k != "unit"},
        "unit",
        "lacks the field 'unit'",
        id="no-unit",
    ),
    pytest.param(minimal_table(operation={}), "operation", "unknown field", id="typo-key"),
    pytest.param(minimal_table(operations=[1, 2]), "operations", "JSON object", id="ops-list"),
    pytest.param(
        minimal_table(memory={"levels": {"dram": -5}}),
        "memory.levels.dram",
        "finite energy >= 0",
        id="negative-memory",
    ),
    pytest.param(
        minimal_table(memory={"access_bits": 64}),
        "memory.levels",
        "lacks 'levels'",
        id="memory-no-levels",
    ),
    pytest.param(
        minimal_table(memory={"levels": {"dram": 1}, "access_bits": 0}),
        "memory.access_bits",
        "positive whole number",
        id="access-bits-zero",
    ),
    pytest.param(
        minimal_table(memory={"levels": {"dram": 1}, "access_bits": 6.5}),
        "memory.access_bits",
        "positive whole number",
        id="access-bits-float",
    ),
    pytest.param(
        minimal_table(memory={"levels": {"dram": 1}, "default_level": "hbm"}),
        "memory.default_level",
        "not one of the table's levels",
        id="unknown-default-level",
    ),
    pytest.param(
        minimal_table(memory={"levels": {"dram": 1}, "banks": 4}),
        "memory.banks",
        "unknown memory field",
        id="memory-typo",
    ),
    pytest.param(minimal_table(name=5), "name", "must be a string", id="name-not-string"),
    pytest.param(minimal_table(source=["x"]), "source", "JSON object", id="source-list"),
    pytest.param(minimal_table(notes=[1]), "notes", "must be a string", id="note-not-string"),
    pytest.param(minimal_table(notes={"a": 1}), "notes", "list of strings", id="notes-dict"),
    pytest.param([1, 2, 3], "<top level>", "JSON object", id="top-level-list"),
]


@pytest.mark.parametrize(("data", "field", "message"), BAD_TABLES)
def test_bad_table_file_names_file_and_field(tmp_path, data, field, message):
    path = tmp_path / "bad.json"
    # json.dumps writes NaN/Infinity tokens and json.loads reads them back: the check must
    # be ours, not the parser's.
    path.write_text(json.dumps(data), "utf-8")
    with pytest.raises(SpikecodeError, match=message) as info:
        load_table(path)
    assert info.value.context["file"] == str(path)
    assert info.value.context["field"] == field
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [p for p in BAD_TABLES if isinstance(p.values[0], dict)],
)
def test_bad_table_dict_names_field(data, field, message):
    with pytest.raises(SpikecodeError, match=message) as info:
        load_table(data)
    assert info.value.context["field"] == field
    assert info.value.context["file"] == "<dict>"


@pytest.mark.parametrize(
    "text",
    ['{"unit": "pJ", "operations": {', "not json at all", '{"unit": "pJ",}', ""],
)
def test_malformed_json_names_the_file_and_position(tmp_path, text):
    path = tmp_path / "broken.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpikecodeError, match=r"not valid JSON: .* line \d+, column \d+") as info:
        load_table(path)
    assert info.value.context["file"] == str(path)


def test_non_utf8_file_is_refused(tmp_path):
    path = tmp_path / "latin.json"
    path.write_bytes(b'{"unit": "\xb5J"}')
    with pytest.raises(SpikecodeError, match="cannot read energy table") as info:
        load_table(path)
    assert info.value.context["file"] == str(path)


def test_missing_file_and_unknown_name(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(SpikecodeError, match="file not found") as info:
        load_table(missing)
    assert info.value.context["file"] == str(missing)
    with pytest.raises(SpikecodeError, match="no energy table named 'horowitz-7nm'") as info:
        load_table("horowitz-7nm")
    assert "horowitz-45nm" in str(info.value)


def test_wrong_type_is_refused():
    with pytest.raises(SpikecodeError, match="table name, a path"):
        load_table(3.5)  # type: ignore[arg-type]


def test_direct_construction_validates_too():
    with pytest.raises(SpikecodeError, match="lacks the operation"):
        EnergyTable(name="x", operations={"int8_add": 1.0})
    good = dict(load_table(minimal_table()).operations)
    with pytest.raises(SpikecodeError, match="finite energy"):
        EnergyTable(name="x", operations={**good, "fp16_add": -1.0})


def test_source_and_notes_may_be_single_strings():
    table = load_table(minimal_table(source="my lab, 2025", notes="one note"))
    assert dict(table.source) == {"citation": "my lab, 2025"}
    assert table.notes == ("one note",)
    assert load_table(table.to_dict()) == table
