"""The package's lazy exports give the functions the README imports, never a same-named submodule."""

import importlib
import inspect
import pkgutil

import lm.curation


def test_every_export_is_the_object_not_a_module_even_after_submodules_load():
    # Importing a submodule binds its name on the package, shadowing a lazy export of that name
    # (`from lm.curation import fuzzy_dedup` used to return the module once config.py had run).
    for info in pkgutil.iter_modules(lm.curation.__path__):
        importlib.import_module(f"lm.curation.{info.name}")
    for name in lm.curation.__all__:
        obj = getattr(lm.curation, name)
        assert not inspect.ismodule(obj), name
    from lm.curation import fuzzy_dedup

    assert callable(fuzzy_dedup) and fuzzy_dedup.__name__ == "fuzzy_dedup"
