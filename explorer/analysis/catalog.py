"""The checkpoints the app can offer, and the models it has loaded.

Checkpoint pickers list the demo checkpoints and every training run folder (a run folder is itself a
checkpoint folder). ``list_checkpoints`` rescans on every call, so a run that a Train tab starts shows up
the next time a picker opens. ``weights_version`` stamps a checkpoint's weights file: the app's context keys
the models it has loaded by path *and* that stamp, so a checkpoint replaced on disk (a run that finished another
epoch) is reloaded, not served stale.

A checkpoint is named by its *public name*, ``"<root folder name>/<checkpoint folder name>"`` (e.g.
``checkpoints/mnist5k-small_cnn-ips``, ``runs/20261127-...``): the pickers' values, the ``checkpoint`` field of
every answer and the app's messages use it, so no server path leaves the app (``checkpoint_name`` makes it,
``checkpoint_folder`` resolves it, ``public_text`` rewrites a text that names the folders). The root folders are
named by their real (resolved) folder names, so two different roots with one name are refused
(``checkpoint_roots``): the app refuses to start rather than guess which one a name means.

Symbolic links are not followed: a linked folder inside a checkpoint folder (or the runs folder) is neither
listed nor loaded, as the run manager neither lists, resumes nor deletes a linked run folder. The app serves only
what lives under the folders it was given; a link may point anywhere. The given folders themselves may be links.
"""

from __future__ import annotations

from pathlib import Path

from explorer.analysis.cache import file_version
from explorer.checkpoints import CARD, WEIGHTS, CheckpointError, load_card
from explorer.training.methods import BASELINE, FEATURED

__all__ = ["checkpoint_folder", "checkpoint_name", "checkpoint_roots", "default_pair", "list_checkpoints",
           "public_text", "weights_version"]


def checkpoint_roots(dirs: list[Path | str]) -> dict[str, Path]:
    """The folders ``dirs`` resolved, by their folder names (the first part of a public name), in order.

    The same folder given twice counts once; two different folders with one name are refused, as a public name
    could not say which one it means.
    """
    roots: dict[str, Path] = {}
    for d in dirs:
        root = Path(d).expanduser().resolve()
        if roots.setdefault(root.name, root) != root:
            raise CheckpointError(f"two checkpoint folders share the name {root.name!r} ({roots[root.name]} and "
                                  f"{root}); the app names a checkpoint '<folder name>/<checkpoint>', so rename one "
                                  "(e.g. --runs-dir my-runs)")
    return roots


def checkpoint_name(folder: Path | str) -> str:
    """The public name of a checkpoint folder: ``"<root folder name>/<checkpoint folder name>"``."""
    folder = Path(folder).expanduser().resolve()
    return f"{folder.parent.name}/{folder.name}"


def public_text(text: str, dirs: list[Path | str]) -> str:
    """``text`` with every path of a folder in ``dirs`` replaced by the folder's name (e.g. a run's log)."""
    for name, root in sorted(checkpoint_roots(dirs).items(), key=lambda item: -len(str(item[1]))):
        text = text.replace(str(root), name)
    return text


def _folders(dirs: list[Path | str]) -> list[Path]:
    """Every direct sub-folder of ``dirs`` that holds a weights file and is not a link, in name order per dir."""
    found = []
    for root in checkpoint_roots(dirs).values():
        if root.is_dir():
            found.extend(sorted(p for p in root.iterdir() if not p.is_symlink() and (p / WEIGHTS).is_file()
                                and not _linked_files(p)))
    return found


def _task(folder: Path) -> str | None:
    """The dense task of a transfer checkpoint (``explorer.transfer``), None for a classifier or an unreadable card."""
    try:
        return load_card(folder).get("task")
    except CheckpointError:
        return None


def _label(folder: Path) -> str:
    try:
        card = load_card(folder)
    except CheckpointError:
        return f"{checkpoint_name(folder)} (unreadable card)"
    metrics = card.get("test_metrics") or {}
    main = next(((name, metrics[name]) for name in ("accuracy", "miou", "map") if name in metrics), None)
    score = f", test {'acc' if main[0] == 'accuracy' else main[0]} {100 * main[1]:.1f} %" if main else ""
    what = f"{card.get('method', '?')}, {card['model']} on {card['dataset']}{score}"
    return f"{checkpoint_name(folder)} ({what})"


def list_checkpoints(dirs: list[Path | str], task: str | None = None) -> list[tuple[str, str]]:
    """(label, public name) of every classifier checkpoint folder directly under ``dirs`` (``task``: of every
    transfer checkpoint of that task instead); rescans the disk each call."""
    return [(_label(folder), checkpoint_name(folder)) for folder in _folders(dirs) if _task(folder) == task]


def default_pair(dirs: list[Path | str]) -> tuple[str | None, str | None]:
    """The public names of the first checkpoint of the baseline method and the first of the featured one (IPS):
    models A and B."""
    by_method: dict[str, str] = {}
    for folder in _folders(dirs):
        try:
            card = load_card(folder)
        except CheckpointError:
            continue
        if not card.get("task"):  # a transfer checkpoint is no model A or B
            by_method.setdefault(card.get("method", ""), checkpoint_name(folder))
    return by_method.get(BASELINE), by_method.get(FEATURED)


def _linked_files(folder: Path) -> list[str]:
    """The checkpoint files of ``folder`` that are symbolic links (a link to any file of the server would be read
    as the model or its card)."""
    return [name for name in (WEIGHTS, CARD) if (folder / name).is_symlink()]


def checkpoint_folder(name: str | Path, dirs: list[Path | str]) -> Path:
    """The checkpoint folder a picker value names, inside one of ``dirs``; anything else is refused.

    ``name`` is a public name (``"<root folder name>/<checkpoint folder name>"``) or, for scripts, the path of a
    folder directly inside one of ``dirs``. The app only loads what its pickers could offer, so a client cannot
    make it read arbitrary files. The refusals name the roots by name, never by path, also in the value they
    repeat (a path inside a root is repeated as a public name).
    """
    if not name:
        raise CheckpointError("no checkpoint chosen; pick one from the list")
    roots = checkpoint_roots(dirs)
    shown = public_text(str(name), dirs)
    shown = shown if len(shown) <= 120 else f"{shown[:117]}..."  # a 5,000-character name is not repeated whole
    root_name, _, folder_name = str(name).partition("/")
    given = roots[root_name] / folder_name if root_name in roots and folder_name else Path(name).expanduser()
    try:  # a name too long for a path (ENAMETOOLONG) or otherwise unusable is a name that was not offered
        if given.is_symlink():
            raise CheckpointError(f"{shown} is a symbolic link; the app does not follow links to checkpoints (copy "
                                  f"or move the folder itself there)")
        folder = given.resolve()
        offered = folder.parent in roots.values() and (folder / WEIGHTS).is_file()
    except OSError:
        offered = False
    if not offered:
        raise CheckpointError(f"{shown} is not one of the checkpoints offered here: pick one from the list (a name "
                              f"'<folder>/<checkpoint>', a folder with {WEIGHTS} directly under "
                              f"{' or '.join(f'{n}/' for n in roots)})")
    if linked := _linked_files(folder):
        verb = "is a symbolic link" if len(linked) == 1 else "are symbolic links"
        raise CheckpointError(f"{shown}: its {' and '.join(linked)} {verb}; the app does not follow links in "
                              f"checkpoints (copy the file itself there)")
    return folder


def weights_version(folder: Path | str) -> tuple[int, int]:
    """(modification time, size) of a checkpoint folder's weights file: changes when the checkpoint is replaced."""
    return file_version(Path(folder) / WEIGHTS)
