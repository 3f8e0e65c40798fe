"""The frozen-config base: a dataclass resolved once from preset + flags, saved as JSON, read back on resume."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pairgen.core.errors import UserError
from pairgen.core.files import atomic_write_json

C = TypeVar("C", bound="FrozenConfig")


class FrozenConfig:
    """Mixin for `@dataclass(frozen=True)` configs: JSON round trip (lists become tuples) and files.

    `EXECUTION_FIELDS` name the fields that say how a run executes (device, graphs, logging cadence…) rather than
    what it computes: they may differ on resume, and two configs that differ only there describe the same run.
    """

    EXECUTION_FIELDS: ClassVar[tuple[str, ...]] = ()

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_json(cls: type[C], data: dict[str, Any]) -> C:
        if not isinstance(data, dict):
            raise UserError(f"config must be a JSON object, not {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - names
        if unknown:
            raise UserError(f"config has unknown keys {sorted(unknown)}")
        fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        try:
            return cls(**fixed)
        except TypeError as exc:
            raise UserError(f"config is invalid ({exc})") from None

    def experiment(self) -> dict[str, Any]:
        """The fields that define what is computed (everything but EXECUTION_FIELDS): compared for "same run"."""
        return {k: v for k, v in self.to_json().items() if k not in self.EXECUTION_FIELDS}

    def differences(self, other: "FrozenConfig", ignore: tuple[str, ...] = ()) -> list[str]:
        """Sorted names of the experiment fields (less `ignore`) on which `other` differs from this config."""
        mine, theirs = self.experiment(), other.experiment()
        return sorted(k for k in set(mine) | set(theirs) if k not in ignore and mine.get(k) != theirs.get(k))

    def with_execution(self: C, other: "FrozenConfig") -> C:
        """This config with `other`'s EXECUTION_FIELDS (a resumed run: its own experiment, today's execution)."""
        return dataclasses.replace(self, **{k: getattr(other, k) for k in self.EXECUTION_FIELDS})  # type: ignore

    def to_text(self) -> str:
        """The config as indented JSON (what `--dry-run` prints)."""
        return json.dumps(self.to_json(), indent=2)

    def save(self, path: Path) -> None:
        atomic_write_json(path, self.to_json())

    @classmethod
    def load(cls: type[C], path: Path) -> C:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: unreadable config ({exc})") from None
        try:
            return cls.from_json(data)
        except UserError as exc:
            raise UserError(f"{path}: {exc}") from None
