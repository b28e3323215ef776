"""Dataset layouts `medssl data index` understands; each maps a folder to manifest rows.

Modality packages register their layouts here (`register_layout`, from their own package: the
ECG layouts in `medssl.ecg.modality`, the shared `volume-folder` in `medssl.imaging.volume_folder`).
Each layout returns (rows, skipped), where skipped lists (path, reason) for records that could not
be indexed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

LayoutIndexer = Callable[..., tuple[list[dict], list[tuple[str, str]]]]


LAYOUTS: dict[str, LayoutIndexer] = {}  # modalities register theirs when their plug-in module is imported


def register_layout(name: str, indexer: LayoutIndexer) -> LayoutIndexer:
    """Add a layout: `indexer(root, labels=None, task=None, **options) -> (rows, skipped)`; options
    are the keyword arguments it declares (e.g. `fov`), given on the command line as `--option K=V`."""
    LAYOUTS[name] = indexer
    return indexer


def known_layouts() -> list[str]:
    from medssl.plugins import modalities

    modalities()  # imports every modality's plug-in module, which registers its layouts
    return sorted(LAYOUTS)


def index_layout(
    layout: str, root: Path, *, labels: str | None = None, task: str | None = None, rate: int | None = None,
    **options,
):
    """(rows, skipped) of the dataset at `root` read as `layout`; options the layout does not take
    are refused by name."""
    if layout not in LAYOUTS and layout not in known_layouts():  # image layouts load on first use
        raise ValueError(f"unknown layout {layout!r}; known layouts: {', '.join(known_layouts())}")
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: dataset folder not found")
    indexer = LAYOUTS[layout]
    accepted = inspect.signature(indexer).parameters
    kwargs: dict = {"labels": labels, "task": task}
    if rate is not None:
        if "rate" not in accepted:
            raise ValueError(f"layout {layout} has no --rate: it is stored at one sampling rate")
        kwargs["rate"] = rate
    for key, value in options.items():
        if key not in accepted:
            known = [k for k in accepted if k not in ("root", "labels", "task")]
            raise ValueError(f"layout {layout} has no option {key!r}; its options: {', '.join(known) or 'none'}")
        kwargs[key] = value
    return indexer(root, **kwargs)
