"""The checkpoints the app can offer, and the models it has loaded.

Checkpoint pickers list the demo checkpoints and every training run folder (a run folder is itself a
checkpoint folder). ``list_checkpoints`` rescans on every call, so a run that a Train tab starts shows up
the next time a picker opens. ``weights_version`` stamps a checkpoint's weights file: the app's context keys
the models it has loaded by path *and* that stamp, so a checkpoint replaced on disk (a run that finished another
epoch) is reloaded, not served stale.

Symbolic links are not followed: a linked folder inside a checkpoint folder (or the runs folder) is neither
listed nor loaded, as the run manager neither lists, resumes nor deletes a linked run folder. The app serves only
what lives under the folders it was given; a link may point anywhere. The given folders themselves may be links.
"""

from __future__ import annotations

from pathlib import Path

from explorer.analysis.cache import file_version
from explorer.checkpoints import WEIGHTS, CheckpointError, load_card
from explorer.training.methods import BASELINE, FEATURED

__all__ = ["checkpoint_folder", "default_pair", "list_checkpoints", "weights_version"]


def _folders(dirs: list[Path]) -> list[Path]:
    """Every direct sub-folder of ``dirs`` that holds a weights file and is not a link, in name order per dir."""
    found = []
    for root in dirs:
        if root.is_dir():
            found.extend(sorted(p for p in root.iterdir() if not p.is_symlink() and (p / WEIGHTS).is_file()))
    return found


def _label(folder: Path) -> str:
    try:
        card = load_card(folder)
    except CheckpointError:
        return f"{folder.parent.name}/{folder.name} (unreadable card)"
    accuracy = (card.get("test_metrics") or {}).get("accuracy")
    score = f", test acc {100 * accuracy:.1f} %" if accuracy is not None else ""
    what = f"{card.get('method', '?')}, {card['model']} on {card['dataset']}{score}"
    return f"{folder.parent.name}/{folder.name} ({what})"


def list_checkpoints(dirs: list[Path | str]) -> list[tuple[str, str]]:
    """(label, folder path) of every checkpoint folder directly under ``dirs``; rescans the disk each call."""
    return [(_label(folder), str(folder)) for folder in _folders([Path(d) for d in dirs])]


def default_pair(dirs: list[Path | str]) -> tuple[str | None, str | None]:
    """The first checkpoint of the baseline method and the first of the featured one (IPS): models A and B."""
    by_method: dict[str, str] = {}
    for folder in _folders([Path(d) for d in dirs]):
        try:
            by_method.setdefault(load_card(folder).get("method", ""), str(folder))
        except CheckpointError:
            continue
    return by_method.get(BASELINE), by_method.get(FEATURED)


def checkpoint_folder(path: str | Path, dirs: list[Path | str]) -> Path:
    """``path`` as a checkpoint folder inside one of ``dirs``; anything else is refused.

    The app only loads what its pickers could offer, so a client cannot make it read arbitrary files.
    """
    if not path:
        raise CheckpointError("no checkpoint chosen; pick one from the list")
    if Path(path).expanduser().is_symlink():
        raise CheckpointError(f"{path} is a symbolic link; the app does not follow links to checkpoints (copy or move "
                              f"the folder itself there)")
    folder = Path(path).expanduser().resolve()
    roots = [Path(d).expanduser().resolve() for d in dirs]
    if folder.parent not in roots or not (folder / WEIGHTS).is_file():
        raise CheckpointError(f"{path} is not one of the checkpoints offered here (folders with {WEIGHTS} "
                              f"directly under {', '.join(str(d) for d in dirs)})")
    return folder


def weights_version(folder: Path | str) -> tuple[int, int]:
    """(modification time, size) of a checkpoint folder's weights file: changes when the checkpoint is replaced."""
    return file_version(Path(folder) / WEIGHTS)
