"""Label Studio labeling configs <-> experiment classes.

A config for image classification holds one ``<Choices>`` control bound (``toName``) to one
``<Image>`` object whose ``value`` names the task data key (``$image``). The experiment's
``class_names`` must be exactly the control's choice values (order may differ); anything else is
an ``InvalidArgument`` naming the missing and the extra names, so a mislabeled project is refused
before any label is stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from xml.etree import ElementTree as ET
from xml.sax.saxutils import quoteattr

from activekd.errors import InvalidArgument, shown

#: largest labeling config parsed (a classification config is a few KiB)
MAX_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True)
class ChoiceControl:
    """The ``<Choices>`` control of a labeling config and the object it labels."""

    from_name: str
    to_name: str
    data_key: str
    choices: tuple[str, ...]


def parse_choices(label_config: str) -> ChoiceControl:
    """The single ``<Choices>`` control of ``label_config`` (``InvalidArgument`` otherwise)."""
    if len(label_config.encode()) > MAX_CONFIG_BYTES:
        raise InvalidArgument(f"labeling config is over {MAX_CONFIG_BYTES} bytes")
    if "<!DOCTYPE" in label_config.upper() or "<!ENTITY" in label_config.upper():
        raise InvalidArgument("labeling config must not declare a DOCTYPE or entities")
    try:
        root = ET.fromstring(label_config)
    except ET.ParseError as exc:
        raise InvalidArgument(f"labeling config is not XML: {exc}") from None
    controls = [el for el in root.iter() if el.tag == "Choices"]
    if len(controls) != 1:
        raise InvalidArgument(
            f"labeling config needs exactly one <Choices> control, found {len(controls)}"
        )
    ctl = controls[0]
    from_name, to_name = ctl.get("name", ""), ctl.get("toName", "")
    objects = {el.get("name"): el for el in root.iter() if el.get("name") and el.get("value")}
    obj = objects.get(to_name)
    if not from_name or obj is None:
        raise InvalidArgument(
            f"<Choices name={shown(from_name)} toName={shown(to_name)}> must name an object "
            '(e.g. <Image name=... value="$image"/>)'
        )
    value = obj.get("value", "")
    if not value.startswith("$") or len(value) < 2:
        raise InvalidArgument(f"object {shown(to_name)} value {shown(value)} must be $<data key>")
    choices = tuple(ch.get("value", "") for ch in ctl if ch.tag == "Choice")
    if not choices or any(not c for c in choices):
        raise InvalidArgument("<Choices> needs <Choice value=...> children with non-empty values")
    return ChoiceControl(from_name, to_name, value[1:], choices)


def labeling_config(class_names: Sequence[str], data_key: str = "image") -> str:
    """An image-classification labeling config whose choices are ``class_names`` in order."""
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in class_names)
    return (
        "<View>\n"
        f'  <Image name="image" value="${data_key}"/>\n'
        '  <Choices name="label" toName="image" choice="single" showInLine="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


class ClassMap:
    """Choice value <-> class index, checked against the experiment's ``class_names``."""

    def __init__(self, control: ChoiceControl, class_names: Sequence[str]) -> None:
        names, offered = list(class_names), set(control.choices)
        missing = [n for n in names if n not in offered]
        extra = sorted(offered - set(names))
        if missing or extra or len(offered) != len(control.choices):
            parts = []
            if missing:
                parts.append("missing from the labeling config: " + ", ".join(missing[:10]))
            if extra:
                parts.append("not classes of the experiment: " + ", ".join(extra[:10]))
            if len(offered) != len(control.choices):
                parts.append("the labeling config repeats a choice")
            raise InvalidArgument(
                "the labeling config's choices differ from the experiment's class_names ("
                + "; ".join(parts)
                + ")",
                field="class_names",
            )
        self.control = control
        self.class_names = names
        self._index = {n: i for i, n in enumerate(names)}

    @classmethod
    def from_config(cls, label_config: str, class_names: Sequence[str]) -> ClassMap:
        return cls(parse_choices(label_config), class_names)

    def index(self, choice: str) -> int:
        try:
            return self._index[choice]
        except KeyError:
            raise InvalidArgument(f"choice {shown(choice)} is not a class") from None

    def name(self, index: int) -> str:
        return self.class_names[int(index)]


__all__ = ["ChoiceControl", "ClassMap", "labeling_config", "parse_choices"]
