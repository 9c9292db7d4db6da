"""The one training loop of both stages, single process or under torchrun (gloo on CPU, NCCL on
GPU).

Under `torchrun --nproc_per_node=N` every rank draws the same global batch from a shared seed and
`shard` takes its slice; DDP averages the gradients, so N processes give the result of one
process with the same global batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import nn

from avatar.errors import TalkingAvatarError
from avatar.threads import TrainingThreads

if TYPE_CHECKING:
    from animator.train import TrainConfig


def is_main() -> bool:
    """Whether this is the process that logs and writes (rank 0, or the only one)."""
    return not dist.is_initialized() or dist.get_rank() == 0


def _world() -> tuple[int, int]:
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> bool:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); returns whether it did."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)
    return True


def shard(x: torch.Tensor | None) -> torch.Tensor | None:
    """This process's slice of a global batch `[B, ...]` (all of it in a single process)."""
    rank, world = _world()
    if x is None or world == 1:
        return x
    if x.shape[0] % world:
        raise TalkingAvatarError(f"batch {x.shape[0]} must divide by the {world} processes")
    per = x.shape[0] // world
    return x[rank * per : (rank + 1) * per]


def wrap(model: nn.Module) -> nn.Module:
    """`model` wrapped in DDP, which averages the gradients, when several processes train."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        return nn.parallel.DistributedDataParallel(model)
    return model


def optimise(
    model: nn.Module,
    cfg: TrainConfig,
    steps: int,
    *,
    seed: int,
    desc: str,
    step_loss: Callable[[nn.Module, torch.Generator], tuple[torch.Tensor, dict]],
    postfix: Callable[[dict], dict[str, str]],
    validate: Callable[[int, dict], None],
    progress: bool,
    threads: TrainingThreads | None,
) -> None:
    """The one training loop of both stages: AdamW with a one-cycle schedule over `steps`
    batches; `step_loss(net, gen)` crops a batch with the loop's generator and returns the loss
    and what to show (`postfix` every 10 steps on the progress bar, `validate(step, shown)`
    every `cfg.val_every` steps on the main process). `net` is the model wrapped for
    distributed training when torchrun started us."""
    from tqdm import tqdm

    net = wrap(model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    bar = tqdm(range(steps), desc=desc, disable=not (progress and is_main()))
    for step in bar:
        if threads is not None:
            threads.update()
        loss, shown = step_loss(net, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 10 == 0:
            bar.set_postfix(postfix(shown))
        if is_main() and (step + 1) % cfg.val_every == 0:
            validate(step + 1, shown)
