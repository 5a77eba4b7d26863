"""YAML recipe -> typed `Recipe`, with `base:` inheritance and `--set` overrides.

Errors are `RecipeError`s that name the dotted key, the file and the line that set it
(or the `--set` override), so a user fixes the recipe without reading a traceback.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import typing
from pathlib import Path
from typing import Any, Callable

import yaml

from mindxh.config.errors import InvalidValue, InvalidValues
from mindxh.config.schema import Recipe
from mindxh.errors import MindxhError


class RecipeError(MindxhError, ValueError):
    """A recipe that cannot run: the message names key, file and line."""


# where each dotted key was set: "model.hidden_size" -> "recipes/tiny/pretrain.yaml, line 7"
Sources = dict[str, str]


def _read_yaml(path: Path) -> tuple[dict, Sources]:
    """Parse one YAML file, remembering the line of every key."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"recipe file not found: {path}") from None
    except IsADirectoryError:
        raise RecipeError(f"{path} is a directory, not a recipe file") from None
    except UnicodeDecodeError as exc:
        line = exc.object[:exc.start].count(b"\n") + 1
        raise RecipeError(f"{path}, line {line}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise RecipeError(f"cannot read recipe file {path}: {exc.strerror}") from None
    return _parse_yaml(text, path)


def _parse_yaml(text: str, path: Path | str) -> tuple[dict, Sources]:
    """Parse recipe text; `path` names it in errors and line references."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f", line {mark.line + 1}" if mark is not None else ""
        raise RecipeError(f"{path}{where}: invalid YAML: {exc.problem}") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of sections, got {type(data).__name__}")
    sources: Sources = {}

    def walk(n: yaml.Node, key: str) -> None:
        if isinstance(n, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in n.value:
                child = f"{key}.{key_node.value}" if key else str(key_node.value)
                line = key_node.start_mark.line + 1
                if child in seen:  # YAML keeps the last silently: a whole section could vanish
                    raise RecipeError(f"{path}, line {line}: duplicate key '{child}' (first set "
                                      f"at line {seen[child]})")
                seen[child] = line
                sources[child] = f"{path}, line {line}"
                walk(value_node, child)
        elif isinstance(n, yaml.SequenceNode):  # items of a list of sections: data.datasets[0]
            for i, item in enumerate(n.value):
                sources[f"{key}[{i}]"] = f"{path}, line {item.start_mark.line + 1}"
                walk(item, f"{key}[{i}]")

    walk(node, "")
    return data, sources


def _merge(base: dict, child: dict) -> dict:
    """Deep-merge mappings; the child wins, lists are replaced whole."""
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _load_with_bases(path: Path, seen: tuple[Path, ...] = ()) -> tuple[dict, Sources]:
    path = path.resolve() if path.is_absolute() else path
    if path.resolve() in seen:
        chain = " -> ".join(str(p) for p in (*seen, path.resolve()))
        raise RecipeError(f"recipe inheritance cycle: {chain}")
    data, sources = _read_yaml(path)
    base_ref = data.pop("base", None)
    sources.pop("base", None)
    if base_ref is None:
        return data, sources
    if not isinstance(base_ref, str):
        raise RecipeError(f"{path}: 'base' must be a path to another recipe")
    base_path = path.parent / base_ref
    if not base_path.exists():
        raise RecipeError(f"{path}: base recipe not found: {base_ref} (looked at {base_path})")
    base_data, base_sources = _load_with_bases(base_path, (*seen, path.resolve()))
    return _merge(base_data, data), {**base_sources, **sources}


def _apply_override(data: dict, sources: Sources, override: str) -> None:
    key, sep, raw = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RecipeError(f"--set {override!r}: expected section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise RecipeError(f"--set {override!r}: the value is not valid YAML") from None
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value
    for stale in [k for k in sources if k.startswith((f"{key}.", f"{key}["))]:
        del sources[stale]  # the override replaced what the file said below this key
    sources[key] = f"--set {override}"


def _where(sources: Sources, key: str) -> str:
    below = next((v for k, v in sources.items() if k.startswith((f"{key}.", f"{key}["))), None)
    while key:
        if key in sources:
            return f" ({sources[key]})"
        key = key[:max(key.rfind("."), key.rfind("["), 0)]  # up one level: a.b[1].c -> a.b[1] -> a.b
    return f" ({below})" if below else ""  # an unknown section named only by the keys under it


def _override_text(sources: Sources, dotted: str) -> str | None:
    """The text after `=` of the `--set` that gave `dotted` its value, or None."""
    origin = sources.get(dotted, "")
    if not origin.startswith("--set "):
        return None
    key, _, raw = origin[len("--set "):].partition("=")
    return raw.strip() if key.strip() == dotted else None


def _accepts_str(tp: Any) -> bool:
    """Whether a field of type `tp` holds free text (a path, a name): str or Optional[str]."""
    if typing.get_origin(tp) is typing.Union:
        return str in typing.get_args(tp)
    return tp is str


def _quoted(text: str) -> bool:
    return len(text) >= 2 and text[0] == text[-1] and text[0] in "'\""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is typing.Union:
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


_NO = object()


def _coerce(value: Any, tp: Any) -> Any:
    """Return `value` as type `tp`, or `_NO`. Strict: no silent bool/int/str mixing."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        for arg in typing.get_args(tp):
            if arg is type(None):
                if value is None:
                    return None
                continue
            out = _coerce(value, arg)
            if out is not _NO:
                return out
        return _NO
    if origin is typing.Literal:
        return value if value in typing.get_args(tp) else _NO
    if origin is list:
        if not isinstance(value, list):
            return _NO
        items = [_coerce(v, typing.get_args(tp)[0]) for v in value]
        return _NO if any(i is _NO for i in items) else items
    if tp is bool:
        return value if isinstance(value, bool) else _NO
    if tp is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _NO
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `3e-4` as a string
            try:
                return float(value)
            except ValueError:
                return _NO
        return _NO
    if tp is str:
        return value if isinstance(value, str) else _NO
    raise TypeError(f"unsupported recipe field type {tp!r}")


def _dataclass_items(tp: Any) -> type | None:
    """The item class of a `list[SomeSection]` field, else None."""
    if typing.get_origin(tp) is list:
        item = typing.get_args(tp)[0]
        if dataclasses.is_dataclass(item):
            return item
    return None


def _build_list(item_cls: type, value: Any, dotted: str, sources: Sources) -> list:
    """A list of sections, e.g. data.datasets: each item is checked like a section."""
    if not isinstance(value, list):
        raise RecipeError(f"{dotted}{_where(sources, dotted)}: expected a list of mappings with keys "
                          f"{', '.join(f.name for f in dataclasses.fields(item_cls))}, got {value!r}")
    return [_build(item_cls, item, f"{dotted}[{i}].", sources) for i, item in enumerate(value)]


def _build(cls: type, data: Any, prefix: str, sources: Sources) -> Any:
    section = prefix.rstrip(".") or "the recipe"
    if not isinstance(data, dict):
        raise RecipeError(f"{section}: expected a mapping of keys{_where(sources, prefix.rstrip('.'))}")
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    missing = [f.name for f in fields if f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING and f.name not in data]
    if missing:
        raise RecipeError(f"{prefix}{missing[0]}{_where(sources, section)}: required key is missing "
                          f"in {section}")
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise RecipeError(f"unknown key '{dotted}'{_where(sources, dotted)}.{hint} "
                              f"Valid keys in {section}: {', '.join(names)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, dotted + ".", sources)
            continue
        item_cls = _dataclass_items(tp)
        if item_cls is not None:
            kwargs[key] = _build_list(item_cls, value, dotted, sources)
            continue
        text = _override_text(sources, dotted)
        if text is not None and value is not None and _accepts_str(tp) and not _quoted(text):
            value = text  # as typed: YAML reads `runs/exp #2` as `runs/exp`, `0123` as 83
        out = _coerce(value, tp)
        if out is _NO:
            raise RecipeError(f"{dotted}{_where(sources, dotted)}: expected {_type_name(tp)}, "
                              f"got {value!r}")
        if isinstance(out, float) and not math.isfinite(out):
            raise RecipeError(f"{dotted}{_where(sources, dotted)}: must be a finite number, "
                              f"got {value!r}")
        kwargs[key] = out
    obj = cls(**kwargs)
    if hasattr(obj, "check"):
        try:
            obj.check()
        except InvalidValue as exc:
            dotted = f"{prefix}{exc.key}"
            raise RecipeError(f"{dotted}{_where(sources, dotted)}: {exc.message}") from None
    return obj


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = (),
                pipeline: bool = False) -> Recipe:
    """Read a recipe file (following `base:`), apply `--set` overrides, validate everything
    (with `pipeline`, also what only `mindxh pipeline` reads: Recipe.pipeline_checks)."""
    data, sources = _load_with_bases(Path(path))
    return _finish(data, sources, overrides, pipeline)


def load_recipe_text(text: str, where: str | Path,
                     overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """A recipe from its resolved text (as `recipe_to_yaml` wrote it, e.g. in a checkpoint);
    `where` names it in errors. A `base:` key is refused: saved recipes are resolved."""
    data, sources = _parse_yaml(text, where)
    if "base" in data:
        raise RecipeError(f"{where}: a saved recipe cannot have 'base' (it is already resolved)")
    return _finish(data, sources, overrides)


def load_recipe_and_plan_problems(path: str | Path, overrides: list[str] | tuple[str, ...] = ()
                                  ) -> tuple[Recipe, list[str]]:
    """Like `load_recipe`, but a parallel plan that breaks rules is returned with the list of
    them ('key (where): message'), not raised: `mindxh plan` sizes such a plan anyway and
    reports every reason. Any other recipe error raises RecipeError as usual."""
    data, sources = _load_with_bases(Path(path))
    recipe, problems = _build_checked(data, sources, overrides)
    return recipe, problems


def _finish(data: dict, sources: Sources, overrides: list[str] | tuple[str, ...],
            pipeline: bool = False) -> Recipe:
    recipe, problems = _build_checked(data, sources, overrides, pipeline)
    if problems:
        head = f"{len(problems)} problems:\n  " if len(problems) > 1 else ""
        raise RecipeError(head + "\n  ".join(problems))
    return recipe


def _build_checked(data: dict, sources: Sources, overrides: list[str] | tuple[str, ...],
                   pipeline: bool = False) -> tuple[Recipe, list[str]]:
    for override in overrides:
        _apply_override(data, sources, override)
    recipe = _build(Recipe, data, "", sources)
    try:
        if pipeline:
            recipe.pipeline_checks()
        recipe.cross_checks()
    except InvalidValues as exc:  # every broken rule of the parallel plan, one line each
        return recipe, [f"{p.key}{_where(sources, p.key)}: {p.message}" for p in exc.problems]
    except InvalidValue as exc:
        raise RecipeError(f"{exc.key}{_where(sources, exc.key)}: {exc.message}") from None
    return recipe, []


def recipe_to_dict(recipe: Recipe) -> dict:
    return dataclasses.asdict(recipe)


def recipe_to_yaml(recipe: Recipe) -> str:
    """The fully resolved recipe, loadable again with `load_recipe`."""
    return yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, default_flow_style=False)


_ABSENT = object()


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _show(value: Any) -> str:
    return "(absent)" if value is _ABSENT else json.dumps(value)


def key_changes(old: dict[str, Any], new: dict[str, Any],
                order: Callable[[str], Any] | None = None) -> list[str]:
    """Each key whose value differs between two flat dicts, as 'key: old -> new' (JSON values,
    `(absent)` for a missing one), sorted by `order` (default: the key)."""
    return [f"{k}: {_show(old.get(k, _ABSENT))} -> {_show(new.get(k, _ABSENT))}"
            for k in sorted(set(old) | set(new), key=order)
            if old.get(k, _ABSENT) != new.get(k, _ABSENT)]


def recipe_changes(old_text: str, new_text: str) -> list[str]:
    """What differs between two recipes as `mindxh` writes them (recipe_to_yaml), one
    'section.key: old -> new' each, in key order; [] when only formatting differs."""
    try:
        old, new = (_flat(yaml.safe_load(t) or {}) for t in (old_text, new_text))
    except yaml.YAMLError:
        return ["(a recipe that is not YAML)"]
    return key_changes(old, new)
