"""Pure orphan rules: what happens to an owned VM or node device that Proxmox no longer has.

- Only objects of a cluster this run is responsible for (in scope after filters) are considered, and only
  when Proxmox itself does not list them: a guest hidden by a filter (``include_*``/``exclude_*``, templates,
  stopped guests) is out of scope, never an orphan.
- **Nothing is orphaned or deleted while any node of its cluster could not be fully read** (an offline node, a
  cluster whose status could not be read): a guest may have migrated onto the unreadable node.
- An orphan gets the ``proxbox-orphan`` tag and the ``proxbox_orphaned_since`` custom field (the date it
  was first found missing). It is deleted only when ``prune = true`` and ``prune_after_days`` have passed
  since that date, oldest first, at most ``max_deletes_per_run`` per run (the rest stay tagged and wait).
- A VM that reappears is mapped again with neither the tag nor the date, so the ordinary update removes them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import attrs

from proxbox.config import SyncSettings
from proxbox.sync.model import CF_ORPHANED, ORPHAN_TAG, Current, Key


@attrs.frozen(kw_only=True)
class OrphanDecision:
    current: Current
    action: str  # "tag" (becomes or stays an orphan), "delete", "keep" (already tagged, nothing to write)
    since: dt.date
    reason: str


@attrs.frozen(kw_only=True)
class OrphanReport:
    decisions: tuple[OrphanDecision, ...] = ()
    held_incomplete: int = 0  # absent but their cluster was not fully discovered
    deferred_deletes: int = 0  # due for deletion but over max_deletes_per_run


def orphaned_since(obj: Current) -> dt.date | None:
    value = obj.get(f"cf.{CF_ORPHANED}")
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value[:10])
        except ValueError:
            return None
    return None


def decide_orphans(
    candidates: Iterable[Current],
    *,
    desired_keys: frozenset[Key],
    present: frozenset[Key],
    in_scope: frozenset[str],
    complete: frozenset[str],
    sync: SyncSettings,
    today: dt.date,
    deletes_left: int,
) -> OrphanReport:
    """Decide for each owned object of one kind (VMs or devices) that the desired state does not contain."""
    held = 0
    due: list[tuple[dt.date, int, Current]] = []
    decisions: list[OrphanDecision] = []
    for obj in candidates:
        if not obj.owned or obj.key is None or obj.key in desired_keys:
            continue
        cluster = obj.key[0]
        if cluster not in in_scope or obj.key in present:
            continue
        if cluster not in complete:
            held += 1
            continue
        since = orphaned_since(obj) or today
        if sync.prune and (today - since).days >= sync.prune_after_days:
            due.append((since, obj.id, obj))
        else:
            decisions.append(_tag(obj, since))
    due.sort(key=lambda t: (t[0], t[1]))
    allowed = max(0, min(deletes_left, sync.max_deletes_per_run))
    for i, (since, _, obj) in enumerate(due):
        if i < allowed:
            days = (today - since).days
            decisions.append(
                OrphanDecision(
                    current=obj,
                    action="delete",
                    since=since,
                    reason=f"orphaned since {since.isoformat()} ({days} d)",
                )
            )
        else:
            decisions.append(_tag(obj, since, deferred=True))
    return OrphanReport(
        decisions=tuple(decisions), held_incomplete=held, deferred_deletes=max(0, len(due) - allowed)
    )


def _tag(obj: Current, since: dt.date, deferred: bool = False) -> OrphanDecision:
    tagged = ORPHAN_TAG in obj.tags and orphaned_since(obj) is not None
    reason = "absent from Proxmox VE" + ("; deletion deferred (max_deletes_per_run)" if deferred else "")
    return OrphanDecision(current=obj, action="keep" if tagged else "tag", since=since, reason=reason)
