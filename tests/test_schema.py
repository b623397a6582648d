import pytest

from fpus23_dataset import schema
from fpus23_dataset.cvat import read_labels_meta


def test_class_orders_are_the_published_ones():
    assert schema.class_names("orientation") == ("hdvb", "hdvf", "huvb", "huvf")
    assert schema.class_names("anatomy") == ("head", "arms", "legs", "abdomen")
    assert schema.class_names("plane") == ("ac", "bpd", "fl", "no_plane")
    assert schema.class_names("bounds") == ("head", "arms", "legs", "abdomen")
    assert schema.PROBE.classes == ("h", "v")


def test_cvat_names_map_to_our_classes():
    assert schema.PLANE.cvat_values == {"Abd_plane": "ac", "Head_plane": "bpd", "Femur_plane": "fl"}
    assert dict(schema.BOX_CVAT_LABELS) == {"head": "head", "arm": "arms", "legs": "legs", "abdomen": "abdomen"}
    assert {t.cvat_label: t.cvat_attribute for t in schema.TAG_TASKS} == {
        "Orientation": "Pose", "location": "View_fetus", "diagnostic_plane": "plane", "Probe": "orientation",
    }
    assert dict(schema.PLANE_FOLDERS) == {"AC_PLANE": "ac", "BPD_PLANE": "bpd", "FL_PLANE": "fl", "NO_PLANE": "no_plane"}


def test_labels_meta_matches_every_real_export(shared_annotations):
    ours = {m["name"]: {a["name"]: set(a["values"]) for a in m["attributes"]} for m in schema.cvat_labels_meta()}
    union: dict = {}
    for xml in sorted(shared_annotations.glob("*/annotations.xml")):
        theirs = {m["name"]: {k: set(v) for k, v in m["attributes"].items()} for m in read_labels_meta(xml)}
        for name, attributes in theirs.items():  # some tasks (longrec) define fewer labels
            assert ours[name] == attributes, (xml, name)
            union[name] = attributes
    assert union == ours


def test_unknown_config_is_a_clear_error():
    import pytest

    with pytest.raises(ValueError, match="unknown config 'planes'"):
        schema.class_names("planes")


def test_declared_features_agree_with_what_datasets_derives():
    """The card's YAML is written by us (no public API in `datasets`); it must be what `datasets` would write."""
    import datasets

    from fpus23_dataset.build import features

    for config in schema.CONFIGS:
        hf = features.features_for(config)
        assert datasets.Features.from_arrow_schema(features.arrow_schema(config)) == hf
        assert features.yaml_features(config) == hf._to_yaml_list()
    assert isinstance(features.features_for("bounds")["objects"], datasets.List)
    assert features.features_for("plane")["label"].names == list(schema.class_names("plane"))
    assert features.image_columns("bounds") == ["image.bytes"]


def test_config_membership_and_task_lists_come_from_the_schema():
    assert schema.configs_of({"orientation": "hdvb", "probe": "h", "plane": "ac"}, True) == ["plane", "orientation", "bounds"]
    assert schema.configs_of({"probe": "h"}, False) == []
    assert set(schema.TASKS) == set(schema.CONFIGS) | {"probe"} and schema.TASKS[0] == schema.DETECTION_TASK
    assert schema.task_classes("probe") == ("h", "v") and schema.task_classes("plane") == schema.class_names("plane")
    with pytest.raises(ValueError):
        schema.class_names("probe")  # not a config of the dataset
