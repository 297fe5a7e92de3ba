import pytest

from mmguard.core.registry import ATTACKS, DATASETS, MODELS, PROBES, VICTIMS, Registry, RegistryError


def test_register_get_list_and_did_you_mean():
    reg = Registry("widget")

    @reg.register("alpha", colour="red")
    def alpha():
        return 1

    reg.add("beta", lambda: 2)
    assert reg.names() == ["alpha", "beta"]
    assert reg.get("alpha")() == 1 and reg.meta("alpha") == {"colour": "red"}
    assert reg.names("a*") == ["alpha"]
    with pytest.raises(RegistryError, match="Did you mean 'alpha'"):
        reg.get("alpah")
    with pytest.raises(RegistryError, match="already registered"):
        reg.add("alpha", lambda: 3)


def test_builtin_registries_are_populated():
    assert len(MODELS.names("tiny-*")) >= 18
    assert {"synthetic", "llava_json", "sharegpt", "jsonl"} <= set(DATASETS.names())
    assert {"lora", "dora", "qlora", "projector", "projector_lora", "full"} == set(VICTIMS.names())
    assert {"random", "em_image", "em_image_classwise", "trigger_text", "multimodal", "mmguard_bph", "mmguard_crs",
            "mmguard_bph_max", "mmguard_crs_max"} <= set(ATTACKS.names())
    assert isinstance(PROBES.names(), list)


def test_entry_point_plugins_are_loaded(monkeypatch, tmp_path):
    """A package outside mmguard registers through the ``mmguard.plugins`` entry-point group."""
    import sys
    from importlib import metadata

    import mmguard.core.registry as registry

    (tmp_path / "my_plugin.py").write_text(
        "from mmguard.core.registry import ATTACKS\n"
        "from mmguard.attacks.base import Attack\n"
        "@ATTACKS.register('plugin_noise')\n"
        "class PluginNoise(Attack):\n"
        "    name = 'plugin_noise'\n"
        "    optimize = False\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = metadata.EntryPoint(name="my_plugin", value="my_plugin", group="mmguard.plugins")
    monkeypatch.setattr(metadata, "entry_points", lambda group=None: [ep] if group == "mmguard.plugins" else [])
    monkeypatch.setattr(registry, "_PLUGINS_LOADED", False)
    try:
        assert "plugin_noise" in ATTACKS.names()
    finally:
        ATTACKS._entries.pop("plugin_noise", None)
        sys.modules.pop("my_plugin", None)
