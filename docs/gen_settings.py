"""Writes docs/settings.md from the pydantic settings classes of the serving processes.

    python docs/gen_settings.py

One table per process, one row per field: its environment variable, type, default and description, as
the class defines them, so the page cannot say otherwise than the code. tests/test_docs.py regenerates the
page and fails when the committed one differs.
"""

from __future__ import annotations

import types
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt, MinLen
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings, NoDecode

from spikebottlenet.device.settings import DeviceSettings
from spikebottlenet.edge.ray_serve import RayServeSettings
from spikebottlenet.edge.settings import EdgeSettings

PAGE = Path(__file__).resolve().parent / "settings.md"

# (section title, the command, its settings class)
PROCESSES: list[tuple[str, str, type[BaseSettings]]] = [
    ("Edge", "sbn edge", EdgeSettings),
    ("Ray Serve", "sbn serve-ray", RayServeSettings),
    ("Device", "sbn device", DeviceSettings),
]

TYPE_NAMES: dict[Any, str] = {
    int: "integer",
    float: "number",
    str: "string",
    bool: "boolean",
    Path: "path",
    SecretStr: "string (secret)",
}

HEADER = """\
<!-- Written by docs/gen_settings.py from the settings classes; edit those, then run: python docs/gen_settings.py -->

# Settings

One settings object per process, from environment variables, overridden by the flag of the same name:
the variable's name after its prefix, in lower case with dashes (`SBN_DEVICE_MAX_BATCH` is
`--max-batch`; `sbn edge --help`, `sbn serve-ray --help` and `sbn device --help` list them all). A flag
given wins over the environment, and the environment over the default. A setting that takes several
values takes them separated by commas in its variable, and as a repeated flag.

Two more variables choose the model of both halves at once: `SBN_ARCH` and `SBN_SPLIT_POINT`, read by
`sbn up` and `docker compose` unless a half's own `SBN_EDGE_*` / `SBN_DEVICE_*` variable is set.
`sbn classify` takes a device's URL from `SBN_DEVICE_URL` and its API key from `SBN_API_KEY`.
"""


def type_text(annotation: Any) -> str:
    """A field's type in words; an optional field's None shows as its default ("unset")."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(type_text(arg) for arg in args if arg is not type(None))
    if origin is Annotated:  # pydantic's FilePath: Path with a PathType marker
        return "path of an existing file" if args[0] is Path else type_text(args[0])
    if origin is Literal:
        return " \\| ".join(f"`{value}`" for value in args)
    if origin is list:
        return f"{type_text(args[0])}s"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " \\| ".join(f"`{member.value}`" for member in annotation)
    return TYPE_NAMES[annotation]  # a type not named here: name it


def bounds_text(field: FieldInfo) -> str:
    """The field's bounds, e.g. ``0..65535``, ``≥ 1`` or ``> 0, ≤ 1``, and a minimum length."""
    lower = upper = None  # (relation, value)
    words = []
    for rule in field.metadata:
        if isinstance(rule, Ge):
            lower = ("≥", rule.ge)
        elif isinstance(rule, Gt):
            lower = (">", rule.gt)
        elif isinstance(rule, Le):
            upper = ("≤", rule.le)
        elif isinstance(rule, Lt):
            upper = ("<", rule.lt)
        elif isinstance(rule, MinLen):
            words.append("not empty" if rule.min_length == 1 else f"at least {rule.min_length} characters")
        elif rule is not NoDecode:  # NoDecode: the variable is split at commas, not read as JSON
            raise ValueError(f"no wording for the constraint {rule!r}")
    if lower and upper and (lower[0], upper[0]) == ("≥", "≤"):
        words.insert(0, f"{lower[1]}..{upper[1]}")
    else:
        words[:0] = [f"{bound[0]} {bound[1]}" for bound in (lower, upper) if bound]
    return ", ".join(words)


def default_text(field: FieldInfo) -> str:
    value = field.default_factory() if field.default is PydanticUndefined else field.default
    if value is None or value == []:
        return "unset"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        value = str(value).lower()
    return f"`{value}`"


def cell(text: str) -> str:
    """Text safe in a Markdown table cell."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def settings_table(settings_class: type[BaseSettings]) -> str:
    prefix = settings_class.model_config["env_prefix"]
    rows = ["| variable | type | default | meaning |", "|---|---|---|---|"]
    for name, field in settings_class.model_fields.items():
        kind = type_text(field.annotation)
        if bounds := bounds_text(field):
            kind = f"{kind}, {bounds}"
        rows.append(f"| `{prefix}{name.upper()}` | {kind} | {default_text(field)} | {cell(field.description)} |")
    renamed = [
        f"`{old}` (now `{prefix}{name.upper()}`)"
        for old, name in getattr(settings_class, "renamed_variables", {}).items()
    ]
    if renamed:
        rows.append(f"\nRenamed, and still read with a warning until the next release: {', '.join(renamed)}.")
    return "\n".join(rows)


def render() -> str:
    sections = [HEADER]
    for title, command, settings_class in PROCESSES:
        sections.append(f"## {title} (`{command}`)\n\n{settings_table(settings_class)}\n")
    return "\n".join(sections)


if __name__ == "__main__":
    PAGE.write_text(render())
    print(f"wrote {PAGE}")
