"""Stripe's form encoding, decoded into nested dicts and lists, and typed readers over the result.

stripe-python sends ``application/x-www-form-urlencoded`` bodies (and query strings for GET) with bracket notation:
``line_items[0][price]=price_1``, ``metadata[user_id]=42``, ``expand[0]=payment_intent``; curl users write
``expand[]=...``. Every value arrives as a string, so the readers below convert and validate the way Stripe does,
naming the offending parameter in Stripe's ``a[b][0][c]`` notation.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

from tests.stripe_fake import errors

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_SEGMENT = re.compile(r"\[([^\[\]]*)\]")

# Metadata keys are free text chosen by the caller; keys such as "0" must not turn a metadata hash into a list.
_FREE_FORM_KEYS = frozenset({"metadata"})

# Stripe's documented metadata limits.
_METADATA_MAX_KEYS = 50
_METADATA_MAX_KEY_LENGTH = 40
_METADATA_MAX_VALUE_LENGTH = 500


def decode(text: str) -> dict[str, Any]:
    """Decode a form body or query string into nested dicts, with integer-indexed keys turned into lists."""
    root: dict[str, Any] = {}
    for key, value in urllib.parse.parse_qsl(text, keep_blank_values=True):
        match = _KEY.match(key)
        parts = [match.group(1), *_SEGMENT.findall(match.group(2))] if match else [key]
        node = root
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        leaf = parts[-1]
        # An empty index ("expand[]") appends to the array.
        node[leaf or str(len(node))] = value
    listified: dict[str, Any] = _listify(root, parent=None)
    return listified


def _listify(node: Any, parent: str | None) -> Any:
    if not isinstance(node, dict):
        return node
    items = {key: _listify(value, key) for key, value in node.items()}
    if items and parent not in _FREE_FORM_KEYS and all(key.isdigit() for key in items):
        return [items[key] for key in sorted(items, key=int)]
    return items


class Params:
    """Typed, validating access to one level of decoded parameters; ``path`` is this level's name for errors."""

    def __init__(self, data: Mapping[str, Any], path: str = "") -> None:
        self.data = data
        self.path = path

    def name(self, key: str) -> str:
        return f"{self.path}[{key}]" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.data

    def only(self, *allowed: str) -> None:
        # Stripe rejects any parameter it does not know, which catches typos and removed parameters alike.
        for key in self.data:
            if key not in allowed and not (key == "expand" and not self.path):
                raise errors.unknown_parameter(self.name(key))

    def text(self, key: str, *, required: bool = False) -> str | None:
        value = self.data.get(key)
        if value is None:
            if required:
                raise errors.missing_parameter(self.name(key))
            return None
        if not isinstance(value, str):
            raise errors.invalid(f"Invalid string: {_describe(value)}", param=self.name(key))
        return value

    def integer(
        self, key: str, *, required: bool = False, minimum: int | None = None, maximum: int | None = None
    ) -> int | None:
        raw = self.text(key, required=required)
        if raw is None:
            return None
        try:
            value = int(raw)
        except ValueError:
            raise errors.invalid(f"Invalid integer: {raw}", param=self.name(key)) from None
        if minimum is not None and value < minimum:
            raise errors.invalid(
                f"This value must be greater than or equal to {minimum}.",
                param=self.name(key),
                code="parameter_invalid_integer",
            )
        if maximum is not None and value > maximum:
            raise errors.invalid(
                f"This value must be less than or equal to {maximum}.",
                param=self.name(key),
                code="parameter_invalid_integer",
            )
        return value

    def boolean(self, key: str) -> bool | None:
        raw = self.text(key)
        if raw is None:
            return None
        if raw not in {"true", "false"}:
            raise errors.invalid(f"Invalid boolean: {raw}", param=self.name(key))
        return raw == "true"

    def strings(self, key: str) -> list[str] | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise errors.invalid(f"Invalid array: {_describe(value)}", param=self.name(key))
        return list(value)

    def child(self, key: str) -> Params | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise errors.invalid(f"Invalid object: {_describe(value)}", param=self.name(key))
        return Params(value, self.name(key))

    def children(self, key: str) -> list[Params]:
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise errors.invalid(f"Invalid array: {_describe(value)}", param=self.name(key))
        return [Params(item, f"{self.name(key)}[{index}]") for index, item in enumerate(value)]

    def metadata(self, current: Mapping[str, str] | None = None, key: str = "metadata") -> dict[str, str] | None:
        """Apply a metadata update to ``current`` the way Stripe does; ``None`` when the request has no metadata.

        Keys are merged into the existing metadata; an empty value deletes its key, and ``metadata=""`` clears all.
        """
        value = self.data.get(key)
        if value is None:
            return None
        if value == "":
            return {}
        if not isinstance(value, dict):
            raise errors.invalid(f"Invalid object: {_describe(value)}", param=self.name(key))
        merged = dict(current or {})
        for meta_key, meta_value in value.items():
            param = f"{self.name(key)}[{meta_key}]"
            if not isinstance(meta_value, str):
                raise errors.invalid(f"Invalid string: {_describe(meta_value)}", param=param)
            if len(meta_key) > _METADATA_MAX_KEY_LENGTH:
                raise errors.invalid(
                    f"Metadata keys can have up to {_METADATA_MAX_KEY_LENGTH} characters, "
                    f"but you passed in a key that is {len(meta_key)} characters.",
                    param=param,
                )
            if len(meta_value) > _METADATA_MAX_VALUE_LENGTH:
                raise errors.invalid(
                    f"Metadata values can have up to {_METADATA_MAX_VALUE_LENGTH} characters, "
                    f"but you passed in a value that is {len(meta_value)} characters.",
                    param=param,
                )
            if meta_value == "":
                merged.pop(meta_key, None)
            else:
                merged[meta_key] = meta_value
        if len(merged) > _METADATA_MAX_KEYS:
            raise errors.invalid(f"You can have up to {_METADATA_MAX_KEYS} metadata keys.", param=self.name(key))
        return merged


def _describe(value: Any) -> str:
    return "array" if isinstance(value, list) else "object" if isinstance(value, dict) else repr(value)
