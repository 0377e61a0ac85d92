"""Live reload: which running part takes which config section, and what waits for a restart.

The contract: a part that can change while running registers a :class:`LivePart` -- the config
sections it reads and its ``reconfigure`` callable, which receives the new values of exactly
those sections (never the whole config) and returns the keys it kept at their running values
(``"remediation.workers"``: read once, when its workers started).  :func:`apply_reload` offers
every changed section to the parts that read it; a changed section no part reads -- queues,
state, limits, the HTTP listener -- is reported as needing a restart and keeps its running
value, and so does every key a part kept.  There is no list of reloadable names anywhere: a
section is live exactly when a running part says it reads it.

The new file has been fully validated (``load_config``) before this runs, so a part's
``reconfigure`` only applies; it does not judge.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from trailguard.config import Config

__all__ = ["LivePart", "ReloadOutcome", "apply_reload"]


@dataclass(frozen=True, slots=True)
class LivePart:
    """One running part's side of a live reload."""

    #: what it is, for messages ("detection", "remediation", ...)
    name: str
    #: the :class:`~trailguard.config.Config` fields it reads
    sections: tuple[str, ...]
    #: called with the new values of ``sections``, in order, when any of them changed; returns
    #: the keys (``"section.key"``) it kept at their running values
    reconfigure: Callable[..., Iterable[str]]


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    #: the running config now: the new file, except what needs a restart
    config: Config
    #: sections whose new values are running
    applied: tuple[str, ...]
    #: sections (or ``section.key``) that changed and keep their running values until a restart
    restart_required: tuple[str, ...]


def apply_reload(old: Config, new: Config, parts: Sequence[LivePart]) -> ReloadOutcome:
    """Offer ``new``'s changed sections to ``parts``; the config that is running afterwards."""
    changed = [
        name for name in Config.__struct_fields__ if getattr(old, name) != getattr(new, name)
    ]
    read = {section for part in parts for section in part.sections}
    restart = [name for name in changed if name not in read]
    live = [name for name in changed if name in read]
    running: dict[str, Any] = {name: getattr(new, name) for name in live}
    for part in parts:
        if not any(section in live for section in part.sections):
            continue
        for kept in part.reconfigure(*(getattr(new, section) for section in part.sections)):
            section, _, key = kept.partition(".")
            if section not in running or not key:
                raise ValueError(f"{part.name} kept {kept!r}, not a key of a section it reads")
            previous = getattr(getattr(old, section), key)
            running[section] = msgspec.structs.replace(running[section], **{key: previous})
            restart.append(kept)
    applied = tuple(name for name in live if running[name] != getattr(old, name))
    config = msgspec.structs.replace(old, **{name: running[name] for name in applied})
    return ReloadOutcome(config, applied, tuple(restart))
