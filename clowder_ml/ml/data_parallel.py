"""Data-parallel training over a ``torch.distributed`` process group (Ray Train sets it up).

The collectives the training loop (:mod:`clowder_ml.ml.train_loop`) needs, each in a fixed
order on every rank so that a run is bit-reproducible for a given world size: the initial
weights broadcast, one flat gradient all-reduce per step, rank 0's decisions broadcast, and
every rank's RNG states gathered into checkpoints. A failed collective (a peer died) becomes
:class:`CollectiveFailed`, which restarts the group instead of failing the job.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from clowder_ml.ml import determinism


class CollectiveFailed(Exception):
    """A collective of a data-parallel run failed: almost always another rank died (gloo and
    NCCL then raise a plain ``RuntimeError``, e.g. "Connection reset by peer").

    Deliberately neither a ``RuntimeError`` nor a ``ClowderMLError``: it is not a failure of
    the training itself, so the worker must not record it as one (``finetune_worker``); it
    ends the worker so that Ray Train restarts the group, which resumes from the newest
    checkpoint. It never reaches a user.
    """


@contextlib.contextmanager
def collective(what: str) -> Iterator[None]:
    try:
        yield
    except RuntimeError as exc:
        raise CollectiveFailed(f"{what} failed (another worker lost?): "
                               f"{str(exc).strip()[:300]}") from exc


@dataclass(frozen=True)
class Group:
    """This process's place in a data-parallel run of ``world`` > 1 ranks.

    ``comm`` is where collective tensors live: the model's device for NCCL, the CPU for
    gloo (and any other backend)."""

    rank: int
    world: int
    comm: torch.device


def process_group(device: torch.device) -> Group | None:
    """The initialised default process group, or None (no group, or a group of one: the
    single-process code path, unchanged)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return None
    world = dist.get_world_size()
    if world <= 1:
        return None
    comm = device if dist.get_backend() == "nccl" else torch.device("cpu")
    return Group(rank=dist.get_rank(), world=world, comm=comm)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank`` > 0 (rank 0 uses ``seed``): distinct dropout draws per rank,
    derived by hashing so that (seed, rank) pairs do not collide with other seeds."""
    digest = hashlib.sha256(f"clowder-ml/rank-seed/{seed}/{rank}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & (2**31 - 1)


def broadcast_int(g: Group, value: int) -> int:
    """Rank 0's ``value`` on every rank."""
    t = torch.tensor([value], dtype=torch.int64, device=g.comm)
    with collective("broadcast"):
        torch.distributed.broadcast(t, src=0)
    return int(t.item())


def any_rank(g: Group, *flags: bool) -> tuple[bool, ...]:
    """Each flag True on every rank if it is True on any rank (one all-reduce for all)."""
    t = torch.tensor([1 if f else 0 for f in flags], dtype=torch.int64, device=g.comm)
    with collective("all_reduce"):
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return tuple(bool(v) for v in t.tolist())


@torch.no_grad()
def broadcast_model(g: Group, model: torch.nn.Module) -> None:
    """Make every rank's weights rank 0's (a guard: ranks seeded alike already agree)."""
    for t in model.state_dict().values():  # the same order on every rank
        buf = t if t.device == g.comm else t.to(g.comm)
        with collective("broadcast of the initial weights"):
            torch.distributed.broadcast(buf, src=0)
        if buf is not t:
            t.copy_(buf)


@torch.no_grad()
def all_reduce_grads(g: Group, params: list[torch.nn.Parameter], step_loss: float) -> float:
    """Sum the gradients (and ``step_loss``) of all ranks, in place; return the summed loss.

    One flat buffer per dtype, parameters in ``named_parameters`` order, so the collective is
    the same on every rank and, for a fixed world size, bit-reproducible. A rank with no
    gradient for a parameter (an empty shard) contributes zeros; a parameter no rank has a
    gradient for keeps ``grad=None``, so AdamW skips it exactly as in a single process.
    """
    dist = torch.distributed
    meta = torch.tensor([step_loss] + [0.0 if p.grad is None else 1.0 for p in params],
                        dtype=torch.float64, device=g.comm)
    with collective("gradient all_reduce"):
        dist.all_reduce(meta)
    present = [bool(x > 0) for x in meta[1:].tolist()]
    by_dtype: dict[torch.dtype, list[torch.nn.Parameter]] = {}
    for p, has in zip(params, present, strict=True):
        if has:
            by_dtype.setdefault(p.dtype, []).append(p)
    for group in by_dtype.values():
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                          for p in group]).to(g.comm)
        with collective("gradient all_reduce"):
            dist.all_reduce(flat)
        offset = 0
        for p in group:
            n = p.numel()
            summed = flat[offset:offset + n].view_as(p).to(p.device)
            if p.grad is None:
                p.grad = summed.clone()
            else:
                p.grad.copy_(summed)
            offset += n
    return float(meta[0].item())


def gather_rng(g: Group) -> list[dict[str, Any]]:
    """Every rank's RNG states, by rank (a collective: all ranks call it at the same step)."""
    states: list[Any] = [None] * g.world
    with collective("all_gather of RNG states"):
        torch.distributed.all_gather_object(states, determinism.rng_state())
    return [dict(s) for s in states]
